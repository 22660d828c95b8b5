"""Write the toy world to disk in each real dataset format, so every real-data path runs offline.

Formats (``OUT`` is the ``out`` directory; ``EXT`` is ``png`` or ``jpg``; items ``0..count-1`` in order):

* ``karpathy``: ``OUT/dataset.json`` (Karpathy's layout: one image entry per item with ``split``, ``filename``
  ``SPLIT_{i:06d}.EXT``, ``filepath`` "", ``imgid``/``cocoid`` i and one sentence, the scene caption) and the images
  in ``OUT/images/``. Data spec: ``karpathy:OUT/dataset.json:OUT/images:SPLIT``.
* ``wds``: tar shards ``OUT/shards-{k:06d}.tar`` of ``shard_size`` samples, key ``{i:06d}``, members ``KEY.EXT``,
  ``KEY.txt`` (caption, UTF-8) and ``KEY.json`` (index, question, answer, question_type); ``OUT/shards.txt`` holds
  the brace pattern ``shards-{000000..K}.tar``. Data spec: ``wds:OUT/shards-{000000..K}.tar``.
* ``vqa``: VQA v2's ``OUT/questions.json`` and ``OUT/annotations.json`` (ten identical human answers per
  question, ids = item index) and images ``OUT/images/COCO_val2014_{i:012d}.EXT``. Data spec:
  ``vqa:OUT/questions.json:OUT/annotations.json:OUT/images``.
* ``folder``: the ``zeroshot`` split (one object an image) as ImageFolder: ``OUT/{class name, spaces as _}/
  {i:06d}.EXT``, ``OUT/classnames.txt`` (every class, label order) and ``OUT/templates.txt``
  (``ZEROSHOT_TEMPLATES``, ``{}`` placeholders). Data spec: ``folder:OUT``.

PNG is lossless (pixels equal ``ToyWorld(split, image_size).image(i)``); JPEG is written at quality 95 without
chroma subsampling (4:4:4: colour is what the toy world's captions and questions are about). Tar members have
fixed metadata (mtime 0, uid/gid 0, mode 0644) in sorted order, so exports are byte-reproducible.
The export is written into a hidden staging folder inside ``OUT`` and moved into place with its index file
(``dataset.json``, ``shards.txt``, ``questions.json``, ``classnames.txt``) last: a crashed export never looks
complete.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from vlprune.data.toyworld import SPLIT_SIZES, ZEROSHOT_TEMPLATES, ToyWorld, class_names

EXPORT_FORMATS = ("karpathy", "wds", "vqa", "folder")
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
INDEX_FILES = {"karpathy": "dataset.json", "wds": "shards.txt", "vqa": "questions.json", "folder": "classnames.txt"}
JPEG_QUALITY = 95
VQA_ANSWERS_PER_QUESTION = 10


def export_toyworld(fmt: str, out: str | Path, count: int, split: str = "val", image_size: int = 64,
                    image_format: str = "png", shard_size: int = 100) -> Path:
    """Write items ``0..count-1`` of the toy world's ``split`` to the directory ``out`` in format ``fmt``
    (``EXPORT_FORMATS``; layouts in the module docstring) and return ``out``; ``data_spec`` gives the ``--data``
    string for it.

    ``folder`` always exports the ``zeroshot`` split. Its class folders sort alphabetically, which is *not* label
    order, and classes without images have no folder: ``classnames.txt`` is authoritative, the label of a file is
    the line index of its folder name with ``_`` read as a space.

    Raises ``ValueError`` (one line naming the argument) for an unknown format, split or image format, a count
    outside ``1..`` the split's size, ``shard_size < 1``, a bad ``image_size``, or an ``out`` that is a file or a
    non-empty directory.
    """
    world = _checked_world(fmt, count, split, image_size, image_format, shard_size)
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        _WRITERS[fmt](world, staging, count, image_format, shard_size)
        _publish(staging, out, INDEX_FILES[fmt])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def data_spec(fmt: str, out: str | Path, split: str = "val") -> str:
    """The ``--data`` string for an export of ``fmt`` in ``out`` (``split``: the one exported, for ``karpathy``)."""
    out = Path(out)
    if fmt == "karpathy":
        return f"karpathy:{out / 'dataset.json'}:{out / 'images'}:{split}"
    if fmt == "wds":
        return f"wds:{out / (out / 'shards.txt').read_text(encoding='utf-8').strip()}"
    if fmt == "vqa":
        return f"vqa:{out / 'questions.json'}:{out / 'annotations.json'}:{out / 'images'}"
    if fmt == "folder":
        return f"folder:{out}"
    raise ValueError(f"fmt={fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")


def _checked_world(fmt: str, count: int, split: str, image_size: int, image_format: str,
                   shard_size: int) -> ToyWorld:
    """Validate the arguments (``ValueError`` naming the argument) and return the world to export."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt={fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLIT_SIZES)}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size={shard_size!r}: pass a positive number of samples per shard")
    source = "zeroshot" if fmt == "folder" else split
    limit = SPLIT_SIZES[source]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
        raise ValueError(f"count={count!r}: the toy world's {source!r} split holds {limit} items; pass a count "
                         f"from 1 to {limit}")
    return ToyWorld(source, image_size=image_size)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out}: is an existing file; pass a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        held = "an export" if any((out / name).exists() for name in INDEX_FILES.values()) else "files"
        raise ValueError(f"out={out}: directory already holds {held}; pass a new or empty directory, or delete it")


def _publish(staging: Path, out: Path, index: str) -> None:
    """Move the staged entries into ``out``, the index file last."""
    for entry in sorted(staging.iterdir(), key=lambda p: (p.name == index, p.name)):
        entry.rename(out / entry.name)


def _encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY, "subsampling": 0} if image_format == "jpg" else {}
    Image.fromarray(image).save(buffer, format=IMAGE_FORMATS[image_format], **options)
    return buffer.getvalue()


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _write_karpathy(world: ToyWorld, dest: Path, count: int, image_format: str, shard_size: int) -> None:
    (dest / "images").mkdir()
    entries = []
    for i in range(count):
        filename = f"{world.split}_{i:06d}.{image_format}"
        (dest / "images" / filename).write_bytes(_encode(world.image(i), image_format))
        caption = world.scene(i).caption
        entries.append({"split": world.split, "filename": filename, "filepath": "", "imgid": i,
                        "sentences": [{"raw": caption, "tokens": caption.split(), "imgid": i, "sentid": i}],
                        "sentids": [i], "cocoid": i})
    _write_json(dest / "dataset.json", {"dataset": "toyworld", "images": entries})


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_wds(world: ToyWorld, dest: Path, count: int, image_format: str, shard_size: int) -> None:
    shards = (count + shard_size - 1) // shard_size
    for shard in range(shards):
        with tarfile.open(dest / f"shards-{shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(shard * shard_size, min(count, (shard + 1) * shard_size)):
                scene, key = world.scene(i), f"{i:06d}"
                meta = {"index": i, "question": scene.question, "answer": scene.answer,
                        "question_type": scene.question_type}
                members = {f"{key}.{image_format}": _encode(world.image(i), image_format),
                           f"{key}.txt": scene.caption.encode("utf-8"),
                           f"{key}.json": json.dumps(meta).encode("utf-8")}
                for name in sorted(members):
                    _add_member(tar, name, members[name])
    (dest / "shards.txt").write_text(f"shards-{{{0:06d}..{shards - 1:06d}}}.tar\n", encoding="utf-8")


def _write_vqa(world: ToyWorld, dest: Path, count: int, image_format: str, shard_size: int) -> None:
    (dest / "images").mkdir()
    questions, annotations = [], []
    for i in range(count):
        scene = world.scene(i)
        (dest / "images" / f"COCO_val2014_{i:012d}.{image_format}").write_bytes(_encode(world.image(i), image_format))
        questions.append({"image_id": i, "question": scene.question, "question_id": i})
        answers = [{"answer": scene.answer, "answer_confidence": "yes", "answer_id": k}
                   for k in range(1, VQA_ANSWERS_PER_QUESTION + 1)]
        annotations.append({"image_id": i, "question_id": i, "question_type": scene.question_type,
                            "answer_type": "other", "multiple_choice_answer": scene.answer, "answers": answers})
    _write_json(dest / "annotations.json", {"annotations": annotations})
    _write_json(dest / "questions.json", {"questions": questions})


def _write_folder(world: ToyWorld, dest: Path, count: int, image_format: str, shard_size: int) -> None:
    names = class_names()
    for i in range(count):
        image, label = world.classification(i)
        folder = dest / names[label].replace(" ", "_")
        folder.mkdir(exist_ok=True)
        (folder / f"{i:06d}.{image_format}").write_bytes(_encode(image, image_format))
    (dest / "templates.txt").write_text("".join(f"{t}\n" for t in ZEROSHOT_TEMPLATES), encoding="utf-8")
    (dest / "classnames.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


_WRITERS: dict[str, Callable[[ToyWorld, Path, int, str, int], None]] = {
    "karpathy": _write_karpathy, "wds": _write_wds, "vqa": _write_vqa, "folder": _write_folder,
}
