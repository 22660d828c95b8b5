"""Real dataset formats: Karpathy-split JSON (COCO / Flickr30k) + image folder, webdataset tar shards
(``jpg`` + ``txt`` members, read with the stdlib ``tarfile``), and VQA-style JSON.

Every path a dataset file names is resolved inside the dataset root; one that escapes it (``..``, an absolute
path, a symlink out) raises ``DatasetError`` naming the file and the entry. Images load through
``vlprune.data.images.load_image`` (RGB uint8, clear errors).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlprune.config import json_type, read_json, show
from vlprune.data.images import PIL_DEFAULT_MAX_PIXELS, decode_image, load_image


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and the entry."""


def inside(root: Path, relative: str, source: str) -> Path:
    """``root / relative``, refused when it resolves outside ``root``."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DatasetError(f"{source}: path {relative!r} escapes the dataset root {root}; dataset files may only "
                           "name files under it")
    return path


def json_text(value: Any, where: str) -> str:
    """``value`` if it is a string of valid UTF-8 text; else one ``DatasetError`` naming ``where``. Bytes that
    were not UTF-8 arrive as lone surrogates (``read_json(..., errors='surrogateescape')``)."""
    if not isinstance(value, str):
        raise DatasetError(f"{where} is {show(value)}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        fault = f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate \\u{code:04x}"
        raise DatasetError(f"{where} is not UTF-8 text ({fault} at character {err.start}); save the file as "
                           "UTF-8") from None
    return value


@dataclass
class RetrievalSet:
    """Images with one or more captions each (``text_image[i]`` = the image caption ``i`` describes)."""

    image_paths: list[Path]
    captions: list[str]
    text_image: list[int]

    def __len__(self) -> int:
        return len(self.image_paths)

    def image(self, index: int) -> np.ndarray:
        return load_image(self.image_paths[index])


def karpathy(json_path: str | Path, image_root: str | Path, split: str = "test") -> RetrievalSet:
    """Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json``: ``images[*]`` with ``split``, ``filepath``
    (COCO) and ``filename``, and ``sentences[*].raw``. Images are looked up under ``image_root``."""
    data = read_json(json_path, "Karpathy file", DatasetError, dict, errors="surrogateescape")
    if not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: expected Karpathy's format (an object whose 'images' is a list)")
    root, paths, captions, owner = Path(image_root), [], [], []
    for n, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{n}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is a JSON {json_type(entry)}, expected an object with split, filename and "
                               "sentences")
        if entry.get("split") != split and not (split == "train" and entry.get("split") == "restval"):
            continue
        relative, sentences = _karpathy_entry(entry, where)
        if not sentences or not all(sentences):
            raise DatasetError(f"{where} ({relative}) has "
                               + ("no sentences" if not sentences else f"an empty sentence at index "
                                  f"{sentences.index('')}") + "; every image needs non-empty captions")
        owner += [len(paths)] * len(sentences)
        captions += sentences
        paths.append(inside(root, relative, f"{json_path} images[{n}]"))
    if not paths:
        raise DatasetError(f"{json_path}: no images in split {split!r}")
    return RetrievalSet(paths, captions, owner)


def _karpathy_entry(entry: dict[str, Any], where: str) -> tuple[str, list[str]]:
    """(image path relative to the root, stripped captions) of one ``images[n]`` object."""
    for key in ("filename", "sentences"):
        if key not in entry:
            raise DatasetError(f"{where} lacks {key!r} (needs filename and sentences[*].raw)")
    relative = str(Path(json_text(entry.get("filepath", ""), f"{where}.filepath"))
                   / json_text(entry["filename"], f"{where}.filename"))
    if not isinstance(entry["sentences"], list):
        raise DatasetError(f"{where}.sentences is a JSON {json_type(entry['sentences'])}, expected a list of "
                           "{\"raw\": caption} objects")
    captions = []
    for i, sentence in enumerate(entry["sentences"]):
        if not isinstance(sentence, dict) or "raw" not in sentence:
            raise DatasetError(f"{where}.sentences[{i}] is {show(sentence)}, expected an object with 'raw' (the "
                               "caption)")
        captions.append(json_text(sentence["raw"], f"{where}.sentences[{i}].raw").strip())
    return relative, captions


@dataclass
class VQAItem:
    image_path: Path
    question: str
    answers: list[str]


def vqa(json_path: str | Path, image_root: str | Path) -> list[VQAItem]:
    """A JSON list of ``{"image": relative path, "question": str, "answer": str | [str, ...]}`` (the ALBEF /
    BLIP ``vqa_*.json`` layout)."""
    data = read_json(json_path, "VQA file", DatasetError, list, errors="surrogateescape")
    items = []
    for n, entry in enumerate(data):
        where = f"{json_path}[{n}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is a JSON {json_type(entry)}, expected an {{image, question, answer}} "
                               "object")
        missing = [key for key in ("image", "question") if key not in entry]
        if missing:
            raise DatasetError(f"{where}: needs 'image' and 'question' (missing {', '.join(missing)})")
        answers = entry.get("answer", [])
        if isinstance(answers, str):
            answers = [json_text(answers, f"{where}.answer")]
        elif isinstance(answers, list):
            answers = [json_text(a, f"{where}.answer[{i}]") for i, a in enumerate(answers)]
        else:
            raise DatasetError(f"{where}.answer is {show(answers)}, expected a string or a list of strings")
        items.append(VQAItem(inside(Path(image_root), json_text(entry["image"], f"{where}.image"), where),
                             json_text(entry["question"], f"{where}.question"), answers))
    return items


def webdataset(shards: list[str | Path], root: str | Path, max_pixels: int = PIL_DEFAULT_MAX_PIXELS
               ) -> Iterator[tuple[np.ndarray, str, str]]:
    """(image, caption, key) from webdataset tar shards: members ``KEY.jpg`` (or ``.png``) and ``KEY.txt``
    grouped by key. Shard paths must lie under ``root``; a sample missing its image or caption, a caption that is
    empty or not UTF-8, or an image over ``max_pixels`` (``load_image``'s limit) raises naming shard and sample."""
    for shard in shards:
        path = inside(Path(root), str(shard), "shard list")
        try:
            with tarfile.open(path) as tar:
                yield from _samples(tar, str(path), max_pixels)
        except tarfile.TarError as err:
            raise DatasetError(f"{path}: not a readable tar shard ({err})") from None


def _samples(tar: tarfile.TarFile, source: str, max_pixels: int) -> Iterator[tuple[np.ndarray, str, str]]:
    groups: dict[str, dict[str, bytes]] = {}
    for member in tar:
        if not member.isfile():
            continue
        key, _, ext = member.name.partition(".")
        groups.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
    for key, parts in groups.items():
        where = f"{source}: sample {key!r}"
        image = parts.get("jpg") or parts.get("jpeg") or parts.get("png")
        if image is None or "txt" not in parts:
            raise DatasetError(f"{where} has {sorted(parts)}; needs jpg (or png) and txt")
        caption = caption_text(parts["txt"], where)
        yield decode_image(image, where, max_pixels), caption, key


def caption_text(data: bytes, where: str) -> str:
    """A webdataset sample's ``txt`` member as a stripped caption; bytes that are not UTF-8 or an empty caption
    are one ``DatasetError`` naming ``where`` (the shard and the sample)."""
    try:
        caption = data.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise DatasetError(f"{where} caption (txt) is not UTF-8 text (byte {data[err.start]:#04x} at offset "
                           f"{err.start}); save captions as UTF-8") from None
    if not caption:
        raise DatasetError(f"{where} has an empty caption (txt); every sample needs one")
    return caption
