"""transformers checkpoints in and out: ``from_hf`` / ``to_hf`` dispatch to the family converters.

A checkpoint is a directory written by ``save_pretrained`` (``config.json`` + ``model.safetensors``, or shards
listed in ``model.safetensors.index.json``; ``preprocessor_config.json`` when present) or an in-memory model.
Weights are read with safetensors only: a directory with just ``pytorch_model.bin`` is refused with the command
that re-saves it. transformers is imported lazily (only configs are parsed with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vlprune.config import read_json_object
from vlprune.models.convert import hf_blip, hf_clip
from vlprune.models.convert.mapping import ConversionError
from vlprune.models.io import Model

_FAMILIES = {"CLIPModel": hf_clip, "BlipForImageTextRetrieval": hf_blip}


@dataclass
class HFCheckpoint:
    """What a converter needs: the transformers config object, the state dict and the image processor's
    settings (None for an in-memory model)."""

    architecture: str
    config: Any
    state: dict[str, torch.Tensor]
    preprocessor: dict | None
    source: str


def _architecture(config: Any, source: str) -> str:
    names = list(getattr(config, "architectures", None) or [])
    supported = [n for n in names if n in _FAMILIES]
    if not supported:
        raise ConversionError(f"{source}: architecture {names or config.model_type!r} is not supported; vlprune "
                              f"converts {sorted(_FAMILIES)}")
    return supported[0]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        weight_map = read_json_object(index, "safetensors index", ConversionError).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ConversionError(f"{index}: 'weight_map' must be a JSON object of tensor name -> shard file")
        shards = sorted(set(weight_map.values()))
        return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
    hint = (" (only pytorch_model.bin: vlprune reads safetensors only; re-save it with transformers: "
            "Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))"
            if (directory / "pytorch_model.bin").is_file() else "")
    raise ConversionError(f"{directory}: no model.safetensors or model.safetensors.index.json{hint}")


def read_hf(path_or_model: str | Path | torch.nn.Module) -> HFCheckpoint:
    """Load a transformers checkpoint directory (or take an in-memory model) without building the model."""
    if isinstance(path_or_model, torch.nn.Module):
        name = type(path_or_model).__name__
        if name not in _FAMILIES:
            raise ConversionError(f"{name} is not supported; vlprune converts {sorted(_FAMILIES)}")
        return HFCheckpoint(name, path_or_model.config, dict(path_or_model.state_dict()), None, name)
    directory = Path(path_or_model)
    if not (directory / "config.json").is_file():
        raise ConversionError(f"{directory}: no config.json; expected a directory written by save_pretrained")
    read_json_object(directory / "config.json", "transformers config", ConversionError)  # one line, not a traceback
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(directory))
    processor = directory / "preprocessor_config.json"
    preprocessor = (read_json_object(processor, "image processor config", ConversionError) if processor.is_file()
                    else None)
    return HFCheckpoint(_architecture(config, str(directory)), config, _weights(directory), preprocessor,
                        str(directory))


def from_hf(path_or_model: str | Path | torch.nn.Module) -> Model:
    """A vlprune model with the weights of a transformers ``CLIPModel`` or ``BlipForImageTextRetrieval``."""
    checkpoint = read_hf(path_or_model)
    return _FAMILIES[checkpoint.architecture].from_checkpoint(checkpoint)


def to_hf(model: Model, directory: str | Path | None = None) -> torch.nn.Module:
    """The transformers model holding ``model``'s weights (zero-padded to stock shapes when structurally
    pruned); written with ``save_pretrained`` (safetensors) when ``directory`` is given."""
    family = hf_blip if model.config.kind == "fusion" else hf_clip
    hf_model = family.to_transformers(model)
    if directory is not None:
        hf_model.save_pretrained(str(directory))
    return hf_model
