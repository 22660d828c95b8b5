"""Save and load models as ``config.json`` + ``model.safetensors`` (no pickles), strictly.

A checkpoint that does not fit its config (keys, shapes, integer weights for float parameters), a truncated file
or an unknown name raises ``CheckpointError`` with one message naming the file and the offending keys/shapes; a
model is never half loaded. A config whose parameter count (``estimate_params``) exceeds ``max_params()`` is
refused before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlprune.config import ConfigError, ModelConfig, read_json_object
from vlprune.models.clip import CLIP
from vlprune.models.fusion import FusionModel
from vlprune.models.size import estimate_params
from vlprune.registry import bundled_dir, list_models, model_config
from vlprune.tokenizer_adapters import Tokenizer, load_any

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
Model = CLIP | FusionModel
MAX_PARAMS_ENV = "VLPRUNE_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 4_000_000_000  # 16 GB of fp32 weights; CLIP ViT-G/14 has about 1.8 billion


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded as it is; the message says which file and why."""


def max_params() -> int:
    """The largest parameter count ``build_model`` accepts: ``$VLPRUNE_MAX_PARAMS`` (``5e9`` or ``5000000000``)
    when set, else ``DEFAULT_MAX_PARAMS``."""
    text = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        value = int(number) if math.isfinite(number) and number == int(number) else 0
    if value <= 0:
        raise ConfigError(f"{MAX_PARAMS_ENV}={text!r} is invalid: expected a positive whole number of parameters, "
                          "such as 5e9 or 5000000000")
    return value


def check_model_size(config: ModelConfig) -> int:
    """The parameter count of ``config`` (``estimate_params``), or ``ConfigError`` if it exceeds ``max_params()``."""
    count, limit = estimate_params(config), max_params()
    if count > limit:
        raise ConfigError(f"model config {config.name or config.kind!r} has {count:,} parameters (counted from its "
                          f"sizes), above the limit of {limit:,} ({limit * 4 / 1e9:.3g} GB of fp32 weights); check "
                          "its widths, vocab_size and num_layers, or, if the size is intended, raise the limit with "
                          f"--max-params or the environment variable {MAX_PARAMS_ENV}={count}")
    return count


def build_model(config: ModelConfig) -> Model:
    """A randomly initialised model for ``config``; a config over ``max_params()`` is refused before allocation."""
    check_model_size(config)
    return CLIP(config) if config.kind == "clip" else FusionModel(config)


def create_model(name: str) -> Model:
    """A registered architecture with random weights (e.g. ``vit-b16-clip`` for speed measurements)."""
    return build_model(model_config(name))


def save(model: Model, directory: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and ``tokenizer.json`` when given) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "vlprune_kind": model.config.kind})
    tmp.replace(directory / WEIGHTS_FILE)
    model.config.to_json(directory / CONFIG_FILE)
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_FILE)
    return directory


def weights_sha256(name_or_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's ``model.safetensors``: results files record it, so a page measured on an
    earlier bundled model can be told apart from one measured on the shipped one."""
    return hashlib.sha256((resolve(name_or_dir) / WEIGHTS_FILE).read_bytes()).hexdigest()


def resolve(name_or_dir: str | Path) -> Path:
    """The directory of a checkpoint: an existing directory, or a bundled model's name."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    bundled = bundled_dir(str(name_or_dir))
    if bundled is not None:
        return bundled
    if str(name_or_dir) in list_models():
        raise CheckpointError(f"{name_or_dir!r} is a known architecture without bundled weights; build it with "
                              f"vlprune.create_model({str(name_or_dir)!r}) or pass a checkpoint directory")
    raise CheckpointError(f"no checkpoint directory or bundled model named {str(name_or_dir)!r}; bundled: "
                          f"{[n for n in list_models() if bundled_dir(n)]}; architectures (random weights, "
                          f"vlprune.create_model): {list_models()}")


def load(name_or_dir: str | Path, map_location: str = "cpu") -> Model:
    """Rebuild a model from its ``config.json`` and load ``model.safetensors`` strictly."""
    directory = resolve(name_or_dir)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; a vlprune checkpoint holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    data = read_json_object(config_path, "config", CheckpointError)
    try:
        config = ModelConfig.from_dict(data)
        check_model_size(config)
    except ConfigError as err:
        raise CheckpointError(f"{config_path}: {err}") from None
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{err}") from None
    model = build_model(config)
    load_state_strict(model, state, str(weights_path))
    model.eval()
    return model


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` only if every key, shape and dtype kind fits; else one error naming them all.
    Floating weights of another precision (fp16/bf16 checkpoints) are cast; integer or bool tensors for floating
    parameters, or floating ones for integer buffers, are refused."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    wrong_dtype = [f"{k}: checkpoint {state[k].dtype} vs model {v.dtype}"
                   for k, v in expected.items() if k in state and _dtype_kind(state[k]) != _dtype_kind(v)]
    problems = key_problems({"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched,
                             "dtype mismatches (integer vs floating point)": wrong_dtype})
    if problems:
        raise CheckpointError(f"{source} does not fit its config: " + "; ".join(problems) +
                              ". Was it saved from another architecture or edited by hand?")
    model.load_state_dict(state, strict=True)


def _dtype_kind(tensor: torch.Tensor) -> str:
    """``floating``, ``complex`` or ``integer`` (bool included): only a cast within a kind is lossless enough."""
    if tensor.dtype.is_floating_point:
        return "floating"
    return "complex" if tensor.dtype.is_complex else "integer"


def key_problems(found: dict[str, list[str]], limit: int = 8) -> list[str]:
    """``["missing keys [a, b]", ...]``: one phrase per non-empty list of ``found`` (label -> items), for one
    error message naming every problem of a state dict."""
    return [f"{label} {short_list(items, limit)}" for label, items in found.items() if items]


def short_list(items: list[str], limit: int = 8) -> str:
    """``[a, b, ...] (+N more)``: the first ``limit`` items of an error message's list."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def load_tokenizer(name_or_dir: str | Path) -> Tokenizer:
    """The tokenizer saved beside a checkpoint: word-level, or a converted checkpoint's own (HF / open_clip)."""
    path = resolve(name_or_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: this checkpoint was saved without a tokenizer")
    return load_any(path)
