"""Training: the generic loop (``trainer``), objectives, the toy-world recipe, and the methods' training runs
(SmartTrim fine-tuning, MoPE distillation, the prune recipe)."""

from vlprune.train.checkpoint import latest_checkpoint, load_checkpoint_weights
from vlprune.train.trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainContext,
    Trainer,
    TrainingStopped,
    lr_at,
    seed_everything,
)

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainContext", "Trainer", "TrainingStopped", "latest_checkpoint",
           "load_checkpoint_weights", "lr_at", "seed_everything"]
