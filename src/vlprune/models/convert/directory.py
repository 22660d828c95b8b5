"""Convert a checkpoint directory between formats, tokenizer and preprocessing included (``vlprune convert``).

Formats: ``vlprune`` (``config.json`` with ``format_version`` + ``model.safetensors`` + ``tokenizer.json``),
``hf`` (``save_pretrained`` output: ``config.json`` with ``architectures``) and ``open_clip`` (``local-dir``
layout: ``open_clip_config.json``). The source format is recognised from its files.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlprune.config import VisionConfig, read_json_object
from vlprune.models.convert.hf import from_hf, to_hf
from vlprune.models.convert.mapping import ConversionError
from vlprune.models.convert.open_clip import CONFIG_FILE as OPEN_CLIP_CONFIG
from vlprune.models.convert.open_clip import from_open_clip, to_open_clip
from vlprune.models.io import CONFIG_FILE, TOKENIZER_FILE, Model, load, save
from vlprune.tokenizer_adapters import HFTokenizer, OpenCLIPTokenizer, load_any

FORMATS = ("vlprune", "hf", "open_clip")
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer_config.json")
DEFAULT_MAX_TEXT = 77  # CLIP's context; BLIP's BERT allows 512 but captions are short (BLIP retrieval uses 35)


def detect(directory: Path) -> str:
    """Which format a checkpoint directory holds."""
    if (directory / OPEN_CLIP_CONFIG).is_file():
        return "open_clip"
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise ConversionError(f"{directory}: neither {CONFIG_FILE} nor {OPEN_CLIP_CONFIG}; not a checkpoint directory")
    data = read_json_object(config, "config", ConversionError)
    if "format_version" in data:
        return "vlprune"
    if "architectures" in data or "model_type" in data:
        return "hf"
    raise ConversionError(f"{config}: neither a vlprune config (format_version) nor a transformers one (architectures)")


def processor_config(vision: VisionConfig, blip: bool) -> dict:
    """transformers image processor settings that reproduce ``vision``'s preprocessing."""
    side = vision.image_size
    common = {"do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(vision.image_mean), "image_std": list(vision.image_std), "do_convert_rgb": True}
    if blip:
        return {"image_processor_type": "BlipImageProcessor", "size": {"height": side, "width": side}, **common}
    return {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": side}, "do_center_crop": True,
            "crop_size": {"height": side, "width": side}, **common}


def _read(src: Path, fmt: str, open_clip_name: str | None, max_length: int | None):
    """(model, tokenizer or None) of a source directory."""
    if fmt == "vlprune":
        tokenizer_path = src / TOKENIZER_FILE
        return load(src), load_any(tokenizer_path) if tokenizer_path.is_file() else None
    if fmt == "hf":
        model = from_hf(src)
        length = max_length or min(model.config.text.max_length, DEFAULT_MAX_TEXT)
        has_tokenizer = any((src / f).is_file() for f in HF_TOKENIZER_FILES)
        return model, HFTokenizer.from_dir(src, length) if has_tokenizer else None
    model = from_open_clip(src)
    return model, OpenCLIPTokenizer(open_clip_name, max_length or model.config.text.max_length)


def convert_directory(src: str | Path, out: str | Path, to: str = "vlprune", open_clip_name: str | None = None,
                      max_length: int | None = None) -> tuple[str, Model]:
    """Convert ``src`` (any format) into ``out`` in format ``to``; returns (source format, model)."""
    if to not in FORMATS:
        raise ConversionError(f"--to {to!r}: expected one of {FORMATS}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ConversionError(f"{src} is not a directory")
    fmt = detect(src)
    model, tokenizer = _read(src, fmt, open_clip_name, max_length)
    if to == "vlprune":
        save(model, out, tokenizer)
    elif to == "hf":
        to_hf(model, out)
        blip = model.config.kind == "fusion"
        (out / "preprocessor_config.json").write_text(json.dumps(processor_config(model.config.vision, blip),
                                                                 indent=2) + "\n")
        if isinstance(tokenizer, HFTokenizer):
            tokenizer.tokenizer.save_pretrained(str(out))
    else:
        to_open_clip(model, out)
    return fmt, model
