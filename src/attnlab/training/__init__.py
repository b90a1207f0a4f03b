"""Training system: the LightningModule, the head contract, optimisation builders, callbacks, loggers."""

from attnlab.training.head import TaskHead
from attnlab.training.module import AttnLabModule, TaskSpec
from attnlab.training.optim import param_groups, warmup_cosine_schedule
from attnlab.training.route import EncoderRoute, TaskRoute

__all__ = ["AttnLabModule", "EncoderRoute", "TaskHead", "TaskRoute", "TaskSpec", "param_groups", "warmup_cosine_schedule"]
