"""Image preprocessing settings of converted checkpoints, as ``VisionConfig`` fields.

HF image processors (``preprocessor_config.json``) and open_clip's ``preprocess_cfg`` both resize with PIL
bicubic, centre crop (CLIP) or squash to a square (BLIP), then normalise with a mean and std. vlprune's
``Preprocess`` (PIL + numpy) reproduces them; a setting it cannot reproduce raises ``ConversionError``.
"""

from __future__ import annotations

from typing import Any

from vlprune.models.convert.mapping import ConversionError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BICUBIC = 3


def _side(value: Any, key: str) -> int | None:
    """A size entry of a processor config: an int, or a dict with ``key`` or equal height and width."""
    if value is None or isinstance(value, int):
        return value
    if key in value:
        return value[key]
    return value["height"] if value.get("height") == value.get("width") else -1


def hf_preprocess(processor: dict | None, image_size: int, resize: str) -> dict:
    """``VisionConfig`` fields for an HF image processor config (OpenAI CLIP's settings when there is none).

    ``resize="shortest"`` (CLIP): shortest edge to ``image_size``, centre crop; ``"squash"`` (BLIP): straight to
    ``image_size`` x ``image_size``."""
    fields = {"image_mean": OPENAI_MEAN, "image_std": OPENAI_STD, "resize": resize, "crop_offset": "floor"}
    if processor is None:
        return fields
    source = "preprocessor_config.json"
    if processor.get("resample", PIL_BICUBIC) != PIL_BICUBIC:
        raise ConversionError(f"{source}: resample={processor['resample']} is not bicubic (3); vlprune's "
                              "preprocessing resizes bicubic only")
    key = "shortest_edge" if resize == "shortest" else "height"
    sizes = {"size": _side(processor.get("size"), key)}
    if resize == "shortest":
        if not processor.get("do_center_crop", True):
            raise ConversionError(f"{source}: do_center_crop=false is not supported (CLIP crops the centre)")
        sizes["crop_size"] = _side(processor.get("crop_size"), "height")
    wrong = {k: v for k, v in sizes.items() if v not in (None, image_size)}
    if wrong:
        raise ConversionError(f"{source}: {wrong} differ from the model's image_size {image_size}; vlprune "
                              "preprocesses to the model's image size only")
    return {**fields, "image_mean": tuple(processor.get("image_mean", OPENAI_MEAN)),
            "image_std": tuple(processor.get("image_std", OPENAI_STD))}


def open_clip_preprocess(cfg: dict, image_size: int) -> dict:
    """``VisionConfig`` fields for open_clip's ``preprocess_cfg`` (torchvision ``Resize`` + ``CenterCrop``,
    whose crop offset rounds)."""
    unsupported = {k: cfg[k] for k, ok in (("interpolation", "bicubic"), ("mode", "RGB"))
                   if k in cfg and cfg[k] != ok}
    if cfg.get("resize_mode", "shortest") not in ("shortest", "squash"):
        unsupported["resize_mode"] = cfg["resize_mode"]
    if cfg.get("size", image_size) not in (image_size, [image_size, image_size], (image_size, image_size)):
        unsupported["size"] = cfg["size"]
    if unsupported:
        raise ConversionError(f"open_clip preprocess_cfg {unsupported} is not supported; vlprune reproduces bicubic "
                              f"RGB resizing (shortest or squash) to the model's image size {image_size}")
    return {"image_mean": tuple(cfg.get("mean", OPENAI_MEAN)), "image_std": tuple(cfg.get("std", OPENAI_STD)),
            "resize": cfg.get("resize_mode", "shortest"), "crop_offset": "round"}
