"""Save / load a SmartTrim: the model as a normal vlprune checkpoint plus ``smarttrim.safetensors`` (trimmer
weights) and ``smarttrim.json`` (the config)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from vlprune.models.io import CheckpointError, load, resolve, save
from vlprune.tokenizer import WordTokenizer
from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.model import SmartTrim

TRIM_WEIGHTS, TRIM_CONFIG = "smarttrim.safetensors", "smarttrim.json"


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
