"""Fine-tune a fusion model with SmartTrim on the toy world (``vlprune train --method smarttrim``), and save /
load the result: the model as a normal vlprune checkpoint plus ``smarttrim.safetensors`` (trimmer weights) and
``smarttrim.json`` (the config)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.models.io import CheckpointError, load, load_tokenizer, resolve, save
from vlprune.tokenizer import WordTokenizer
from vlprune.train.trainer import TrainConfig, Trainer, default_param_groups
from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.model import SmartTrim
from vlprune.trim.objective import SmartTrimObjective

TRIM_WEIGHTS, TRIM_CONFIG = "smarttrim.safetensors", "smarttrim.json"


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


def save_trimmed(trim: SmartTrim, directory: str | Path, tokenizer: WordTokenizer | None = None) -> Path:
    directory = save(trim.model, directory, tokenizer)
    save_file({k: v.detach().contiguous().cpu() for k, v in trim.trimmers.state_dict().items()},
              str(directory / TRIM_WEIGHTS))
    trim.config.save(directory / TRIM_CONFIG)
    return directory


def is_trimmed(name_or_dir: str | Path) -> bool:
    """True when the checkpoint (directory or bundled name) was saved by ``save_trimmed``."""
    return (resolve(name_or_dir) / TRIM_CONFIG).is_file()


def load_trimmed(name_or_dir: str | Path) -> SmartTrim:
    """A ``SmartTrim`` saved by ``save_trimmed`` (strict: every trimmer weight must fit)."""
    directory = resolve(name_or_dir)
    if not (directory / TRIM_CONFIG).is_file():
        raise CheckpointError(f"{directory} holds no {TRIM_CONFIG}; train one with `vlprune train --method smarttrim`")
    trim = SmartTrim(load(directory), SmartTrimConfig.load(directory / TRIM_CONFIG))
    state = load_file(str(directory / TRIM_WEIGHTS))
    missing, unexpected = trim.trimmers.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory / TRIM_WEIGHTS} does not fit {TRIM_CONFIG}: missing {missing}, "
                              f"unexpected {unexpected}")
    return trim.eval()
