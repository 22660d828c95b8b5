"""Robust image loading and CLIP-style preprocessing with PIL + numpy only.

Every file problem (missing, empty, truncated, corrupt, not an image, too many pixels) surfaces as one
``ImageLoadError`` naming the file, never as a raw PIL exception or warning; ``decode_image`` does the same, under
the same pixel limit, for an encoded image in memory (a webdataset member). Every PIL mode becomes RGB uint8:

* transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, palette images with a transparent index) is composited on a
  white background, so hidden colour under transparent pixels (often black or garbage) never reaches a model;
* 16/32-bit integer modes are scaled by their bit depth, not clipped: ``I;16*`` by 65535; ``I`` by 65535 when
  its values fit 0..65535 (16-bit PNG/TIFF data), else by the 31-bit (or, with negatives, signed 32-bit) range;
* float (``F``) images in [0, 1] are scaled by 255, in [0, 255] kept, otherwise min-max stretched;
* EXIF orientation is not applied, as in the reference CLIP / HF pipelines.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlprune.config import CROP_OFFSETS, RESIZE_MODES, VisionConfig

PIL_DEFAULT_MAX_PIXELS = 89_478_485
_OR_SKIP = ", or skip bad files with vlprune.data.images.load_images(..., skip_bad=True)"
_REEXPORT = "re-export it as PNG/JPEG"
DEFAULT_HINT = _REEXPORT + _OR_SKIP
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
_INT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file and what to do about it."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __reduce__(self):
        return type(self), (str(self), self.path)

    @classmethod
    def for_file(cls, path: str | os.PathLike, problem: str, hint: str = DEFAULT_HINT) -> ImageLoadError:
        """Build the error for ``path`` with a problem description and a remedy."""
        return cls(f"{os.fspath(path)}: {problem}; {hint}", os.fspath(path))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    scaled = np.round(values.astype(np.float64) * (255.0 / full_scale))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _int32_to_uint8(values: np.ndarray) -> np.ndarray:
    """Mode ``I`` holds 16-bit data (PNG/TIFF) or genuine 32-bit data; scale by the depth the values need."""
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0:
        return _scale_to_uint8(values, 65535.0 if hi <= 65535 else float(2**31 - 1))
    return _scale_to_uint8(values.astype(np.float64) + 2**31, float(2**32 - 1))


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ValueError("float image contains NaN or inf pixels")
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return _scale_to_uint8(values, 1.0)
    if lo >= 0.0 and hi <= 255.0:
        return _scale_to_uint8(values, 255.0)
    return _scale_to_uint8(values - lo, hi - lo)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array (H, W, 3), following the module's rules."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(np.asarray(img.convert("RGBA")))
    if mode in _INT16_MODES:
        grey = _scale_to_uint8(np.asarray(img), 65535.0)
    elif mode == "I":
        grey = _int32_to_uint8(np.asarray(img))
    elif mode == "F":
        grey = _float_to_uint8(np.asarray(img))
    else:
        try:
            return np.array(img.convert("RGB"), dtype=np.uint8)
        except ValueError as err:
            raise ValueError(f"unsupported image mode {mode!r} ({err})") from err
    return np.repeat(grey[..., None], 3, axis=2)


def load_image(path: str | os.PathLike, max_pixels: int = PIL_DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Fully decode ``path`` into an RGB uint8 array (H, W, 3); any problem raises ``ImageLoadError``.

    Images with more than ``max_pixels`` pixels are refused before decoding. PIL's own bomb check still runs
    (its warning is silenced) and refuses anything over ``2 * PIL.Image.MAX_IMAGE_PIXELS``, also as
    ``ImageLoadError``: a ``max_pixels`` above that needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised too.
    """
    _check_limit(max_pixels)
    file = Path(path)
    if not file.is_file():
        raise ImageLoadError.for_file(path, "no such file", "check the path" + _OR_SKIP)
    if file.stat().st_size == 0:
        raise ImageLoadError.for_file(path, "file is empty (0 bytes)")
    return _decode(file, path, max_pixels, _OR_SKIP)


def decode_image(data: bytes, name: str | os.PathLike, max_pixels: int = PIL_DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``load_image`` for an encoded image held in memory (a webdataset member): the same pixel limit and
    conversions; any problem raises ``ImageLoadError`` naming ``name``."""
    _check_limit(max_pixels)
    if not data:
        raise ImageLoadError.for_file(name, "image is empty (0 bytes)", _REEXPORT)
    return _decode(io.BytesIO(data), name, max_pixels, "")


def _check_limit(max_pixels: int) -> None:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")


def _decode(source: Path | io.BytesIO, name: str | os.PathLike, max_pixels: int, or_skip: str) -> np.ndarray:
    """Decode ``source`` under the pixel limits; errors name ``name`` and end their hint with ``or_skip``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageLoadError.for_file(
                        name, f"image is {width}x{height} = {width * height} pixels, over max_pixels={max_pixels}",
                        "raise max_pixels if the image is trusted" + or_skip)
                img.load()
                return pil_to_rgb(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError.for_file(name, f"image is too large for PIL ({err})",
                                      "raise PIL.Image.MAX_IMAGE_PIXELS if the image is trusted" + or_skip) from err
    except Image.UnidentifiedImageError as err:  # its message repeats the path, or a BytesIO's repr
        raise ImageLoadError.for_file(name, "cannot be decoded as an image (not a format PIL recognises)",
                                      _REEXPORT + or_skip) from err
    except Exception as err:  # PIL plugins raise OSError, SyntaxError, struct.error, zlib.error, ...
        raise ImageLoadError.for_file(name, f"cannot be decoded as an image ({type(err).__name__}: {err})",
                                      _REEXPORT + or_skip) from err


def load_images(paths: Iterable[str | os.PathLike], skip_bad: bool = False,
                max_pixels: int = PIL_DEFAULT_MAX_PIXELS) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Load many images; returns (arrays, skipped (path, reason)). Without ``skip_bad`` the first bad file raises."""
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for path in paths:
        try:
            arrays.append(load_image(path, max_pixels=max_pixels))
        except ImageLoadError as err:
            if not skip_bad:
                raise
            skipped.append((os.fspath(path), str(err)))
    return arrays, skipped


def _resize_channels(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic (PIL) resize of an (H, W, 3) uint8 or float32 array to ``size`` = (width, height)."""
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
    planes = [np.asarray(Image.fromarray(image[..., c]).resize(size, Image.Resampling.BICUBIC)) for c in range(3)]
    return np.stack(planes, axis=2)


@dataclass(frozen=True)
class Preprocess:
    """CLIP image preprocessing matching HF ``CLIPImageProcessor`` (PIL bicubic resize, centre crop, normalise).

    ``resize="shortest"`` scales the shortest edge to ``image_size`` (long edge truncated as HF does) then centre
    crops; ``resize="squash"`` resizes straight to ``image_size`` x ``image_size`` (BLIP). The crop offset is
    ``floor((size - crop) / 2)`` (HF image processors) or, with ``crop_offset="round"``, Python's ``round`` of
    it (torchvision's ``CenterCrop``, which open_clip uses); they differ by one pixel when the excess is odd.
    Inputs: a PIL image (any mode), a uint8 array (H, W) or (H, W, 3), or a float array in [0, 1]. Resampling is
    skipped when the size already matches, so images at the target size pass through bit-exactly.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "shortest"
    crop_offset: str = "floor"

    @classmethod
    def for_vision(cls, vision: VisionConfig) -> Preprocess:
        """The preprocessing a model's vision config asks for."""
        return cls(vision.image_size, vision.image_mean, vision.image_std, vision.resize, vision.crop_offset)

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(np.isfinite(v) for v in values):
                raise ValueError(f"{name} must be 3 finite floats, got {values!r}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"std must be > 0 in every channel, got {self.std!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"crop_offset must be one of {CROP_OFFSETS}, got {self.crop_offset!r}")

    def _as_array(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, Image.Image):
            return pil_to_rgb(image)
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image array must be (H, W) or (H, W, 3), got shape {arr.shape}")
        if arr.dtype == np.uint8:
            return arr
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"image array must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"image array contains {int((~np.isfinite(arr)).sum())} NaN/inf values")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"float image array must lie in [0, 1], got [{arr.min()}, {arr.max()}]; "
                             "pass uint8 for 0..255 data")
        return arr.astype(np.float32)

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) after resizing, following HF's ``get_resize_output_image_size``."""
        size = self.image_size
        if self.resize == "squash":
            return size, size
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size

    def _offset(self, excess: int) -> int:
        return excess // 2 if self.crop_offset == "floor" else int(round(excess / 2.0))

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """Preprocess one image into a normalised float32 tensor (3, image_size, image_size)."""
        arr = self._as_array(image)
        height, width = arr.shape[:2]
        if min(height, width) == 0:
            raise ValueError(f"image has no pixels (shape {arr.shape})")
        target = self._target_size(height, width)
        if target != (width, height):
            arr = _resize_channels(arr, target)
        size = self.image_size
        top, left = self._offset(arr.shape[0] - size), self._offset(arr.shape[1] - size)
        arr = arr[top:top + size, left:left + size]
        if arr.dtype == np.uint8:
            arr = (arr.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (arr - mean) / std
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    def batch(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """Preprocess a non-empty list of images into (B, 3, image_size, image_size)."""
        if len(images) == 0:
            raise ValueError("batch() needs at least one image")
        return torch.stack([self(image) for image in images])
