"""Training system: the LightningModule, the head contract, optimisation builders, callbacks, loggers."""

from attnlab.training.head import TaskHead
from attnlab.training.module import AttnLabModule, TaskSpec
from attnlab.training.optim import param_groups, warmup_cosine_schedule

__all__ = ["AttnLabModule", "TaskHead", "TaskSpec", "param_groups", "warmup_cosine_schedule"]
