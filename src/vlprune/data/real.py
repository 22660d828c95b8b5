"""Real dataset formats: Karpathy-split JSON (COCO / Flickr30k) + image folder, webdataset tar shards
(``jpg`` + ``txt`` members, read with the stdlib ``tarfile``), and VQA-style JSON.

Every path a dataset file names is resolved inside the dataset root; one that escapes it (``..``, an absolute
path, a symlink out) raises ``DatasetError`` naming the file and the entry. Images load through
``vlprune.data.images.load_image`` (RGB uint8, clear errors).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlprune.data.images import ImageLoadError, load_image, pil_to_rgb


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and the entry."""


def inside(root: Path, relative: str, source: str) -> Path:
    """``root / relative``, refused when it resolves outside ``root``."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DatasetError(f"{source}: path {relative!r} escapes the dataset root {root}; dataset files may only "
                           "name files under it")
    return path


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None


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
    data = _read_json(Path(json_path))
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(f"{json_path}: expected Karpathy's format (an object with 'images')")
    root, paths, captions, owner = Path(image_root), [], [], []
    for n, entry in enumerate(data["images"]):
        if entry.get("split") != split and not (split == "train" and entry.get("split") == "restval"):
            continue
        try:
            relative = str(Path(entry.get("filepath", "")) / entry["filename"])
            sentences = [s["raw"].strip() for s in entry["sentences"]]
        except (KeyError, TypeError) as err:
            raise DatasetError(f"{json_path}: images[{n}] lacks {err} (needs filename and sentences[*].raw)") from None
        if not sentences or not all(sentences):
            raise DatasetError(f"{json_path}: images[{n}] ({relative}) has "
                               + ("no sentences" if not sentences else f"an empty sentence at index "
                                  f"{sentences.index('')}") + "; every image needs non-empty captions")
        owner += [len(paths)] * len(sentences)
        captions += sentences
        paths.append(inside(root, relative, f"{json_path} images[{n}]"))
    if not paths:
        raise DatasetError(f"{json_path}: no images in split {split!r}")
    return RetrievalSet(paths, captions, owner)


@dataclass
class VQAItem:
    image_path: Path
    question: str
    answers: list[str]


def vqa(json_path: str | Path, image_root: str | Path) -> list[VQAItem]:
    """A JSON list of ``{"image": relative path, "question": str, "answer": str | [str, ...]}`` (the ALBEF /
    BLIP ``vqa_*.json`` layout)."""
    data = _read_json(Path(json_path))
    if not isinstance(data, list):
        raise DatasetError(f"{json_path}: expected a JSON list of {{image, question, answer}} objects")
    items = []
    for n, entry in enumerate(data):
        try:
            answers = entry.get("answer", [])
            answers = [answers] if isinstance(answers, str) else list(answers)
            items.append(VQAItem(inside(Path(image_root), entry["image"], f"{json_path}[{n}]"), entry["question"],
                                 answers))
        except (KeyError, TypeError, AttributeError) as err:
            raise DatasetError(f"{json_path}[{n}]: needs 'image' and 'question' ({err!r})") from None
    return items


def webdataset(shards: list[str | Path], root: str | Path) -> Iterator[tuple[np.ndarray, str, str]]:
    """(image, caption, key) from webdataset tar shards: members ``KEY.jpg`` (or ``.png``) and ``KEY.txt``
    grouped by key. Shard paths must lie under ``root``; a sample missing its image or caption raises."""
    for shard in shards:
        path = inside(Path(root), str(shard), "shard list")
        try:
            with tarfile.open(path) as tar:
                yield from _samples(tar, str(path))
        except tarfile.TarError as err:
            raise DatasetError(f"{path}: not a readable tar shard ({err})") from None


def _samples(tar: tarfile.TarFile, source: str) -> Iterator[tuple[np.ndarray, str, str]]:
    from PIL import Image

    groups: dict[str, dict[str, bytes]] = {}
    for member in tar:
        if not member.isfile():
            continue
        key, _, ext = member.name.partition(".")
        groups.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
    for key, parts in groups.items():
        image = parts.get("jpg") or parts.get("jpeg") or parts.get("png")
        if image is None or "txt" not in parts:
            raise DatasetError(f"{source}: sample {key!r} has {sorted(parts)}; needs jpg (or png) and txt")
        try:
            with Image.open(io.BytesIO(image)) as img:
                img.load()
                array = pil_to_rgb(img)
        except Exception as err:  # PIL raises many kinds
            raise ImageLoadError(f"{source}: sample {key!r} image cannot be decoded ({err})") from err
        yield array, parts["txt"].decode("utf-8").strip(), key
