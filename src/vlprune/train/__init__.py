"""Training: the generic loop (``trainer``), distributed helpers, objectives and the toy-world recipe."""

from vlprune.train.checkpoint import latest_checkpoint, load_checkpoint_weights
from vlprune.train.distributed import DistributedError, all_gather_with_grad
from vlprune.train.trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainContext,
    Trainer,
    TrainingStopped,
    lr_at,
    seed_everything,
)

__all__ = ["DistributedError", "NonFiniteLossError", "TrainConfig", "TrainContext", "Trainer", "TrainingStopped",
           "all_gather_with_grad", "latest_checkpoint", "load_checkpoint_weights", "lr_at", "seed_everything"]
