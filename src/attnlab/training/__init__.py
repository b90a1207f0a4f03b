"""Training system: the LightningModule, the head contract, optimisation builders, callbacks, loggers."""

from attnlab.training.head import TaskHead
from attnlab.training.module import AttnLabModule, TaskSpec
from attnlab.training.optim import param_groups, warmup_cosine_schedule
from attnlab.training.route import EncoderRoute, TaskRoute
from attnlab.training.sentence_route import SentenceMemoryRoute
from attnlab.training.seq2seq import Seq2SeqHead
from attnlab.training.span import SpanHead

__all__ = ["AttnLabModule", "EncoderRoute", "SentenceMemoryRoute", "Seq2SeqHead", "SpanHead", "TaskHead", "TaskRoute", "TaskSpec", "param_groups", "warmup_cosine_schedule"]
