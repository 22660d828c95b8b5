"""Fine-tune a fusion model with SmartTrim on the toy world (``vlprune train --method smarttrim``); the result is
saved by ``vlprune.trim.io.save_trimmed``."""

from __future__ import annotations

from pathlib import Path

from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.models.io import load, load_tokenizer
from vlprune.train.trainer import TrainConfig, Trainer, default_param_groups
from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.io import save_trimmed
from vlprune.trim.model import SmartTrim
from vlprune.trim.objective import SmartTrimObjective


def param_groups(trim: SmartTrim, config: TrainConfig) -> list[dict]:
    """The backbone's usual AdamW groups; the trimmers at ``trimmer_lr_scale`` × the learning rate, no decay."""
    groups = default_param_groups(trim.model, config.weight_decay)
    trimmers = [p for p in trim.trimmers.parameters() if p.requires_grad]
    if trimmers:
        groups.append({"params": trimmers, "lr": config.lr * trim.config.trimmer_lr_scale, "weight_decay": 0.0})
    return groups


def train_smarttrim(model: str, out_dir: str | Path, config: SmartTrimConfig, task: str, train_config: TrainConfig,
                    train_size: int | None = None, progress: bool = True, workers: int = 0) -> Path:
    """Fine-tune ``model`` (bundled name or checkpoint dir) with SmartTrim on ``task`` (``vqa`` or ``itm``); returns
    the directory of the saved result (``out_dir/model``)."""
    net = load(model)
    trim = SmartTrim(net, config).train()
    tokenizer = load_tokenizer(model)
    dataset = ToyPairs(ToyWorld("train", image_size=net.config.vision.image_size, size=train_size))
    collate = Collate(tokenizer, net.config.vision)
    trainer = Trainer(trim, SmartTrimObjective(task, train_config.steps), dataset, collate, train_config, out_dir,
                      lambda m: param_groups(m, train_config), progress=progress,
                      workers=workers)
    trainer.fit(resume=True)
    return save_trimmed(trim.eval(), Path(out_dir) / "model", tokenizer)
