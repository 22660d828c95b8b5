"""The ``--data`` grammar shared by ``vlprune eval``, ``train`` and ``prune``, and the evaluation sets it opens.

=============================================  ===================================================================
spec                                           what
=============================================  ===================================================================
``toyworld:SPLIT[:N]``                         the procedural toy world (first N items of SPLIT)
``karpathy:JSON:IMAGE_ROOT[:SPLIT]``           COCO / Flickr30k Karpathy split (default split ``test``)
``wds:SHARD_PATTERN``                          webdataset tar shards, brace patterns (``shards-{000..099}.tar``)
``vqa:QUESTIONS_JSON:ANNOTATIONS_JSON:ROOT``   VQA v2 questions + annotations, images under ROOT
``folder:ROOT``                                ImageFolder layout (``ROOT/CLASS/*.jpg``) for zero-shot classification
=============================================  ===================================================================

Every set is a plain object with ``len`` and ``image(i)`` (an RGB uint8 array, loaded when asked), so
evaluation streams images in batches; preprocessing and tokenisation come from the model's checkpoint.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlprune.config import read_json_object
from vlprune.data.images import load_image
from vlprune.data.real import DatasetError, RetrievalSet, inside, karpathy
from vlprune.data.shards import ShardIndex
from vlprune.data.toyworld import SPLIT_SIZES, ZEROSHOT_TEMPLATES, ToyWorld, ceiling_of, class_names, positives

DATA_KINDS = {"toyworld": "toyworld:SPLIT[:N]", "karpathy": "karpathy:JSON:IMAGE_ROOT[:SPLIT]",
              "wds": "wds:SHARD_PATTERN", "vqa": "vqa:QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_ROOT",
              "folder": "folder:ROOT"}
DATA_HELP = "; ".join(DATA_KINDS.values())
IMAGENET_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
                      "a rendering of a {}.", "a cropped photo of the {}.", "a photo of the large {}.",
                      "a photo of the small {}.", "a bright photo of a {}.", "a close-up photo of a {}.",
                      "a black and white photo of the {}.", "a low resolution photo of a {}.",
                      "a blurry photo of a {}.", "a good photo of the {}.", "itap of a {}.",
                      "art of the {}.", "a drawing of a {}.", "a photo of a clean {}.")
"""CLIP's 18-template ImageNet subset (the "a photo of a {}." family), used for ``folder:`` without --templates."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: ``kind`` and its ``:``-separated fields."""

    kind: str
    fields: tuple[str, ...]
    text: str

    @property
    def name(self) -> str:
        """The dataset name results record (CLIP_benchmark's ``dataset``)."""
        if self.kind == "toyworld":
            return f"toyworld:{self.fields[0]}"
        if self.kind == "karpathy":
            return f"karpathy:{Path(self.fields[0]).stem}:{self.fields[2] if len(self.fields) > 2 else 'test'}"
        return f"{self.kind}:{Path(self.fields[0]).name}"


def parse_data(spec: str) -> DataSpec:
    """Split and check a ``--data`` value (files are opened later, by ``open_*``)."""
    kind, _, rest = spec.partition(":")
    if kind not in DATA_KINDS:
        raise ValueError(f"--data {spec!r}: unknown kind {kind!r}; expected one of: {DATA_HELP}")
    fields = tuple(rest.split(":")) if rest else ()
    arity = {"toyworld": (1, 2), "karpathy": (2, 3), "wds": (1, 1), "vqa": (3, 3), "folder": (1, 1)}[kind]
    if not arity[0] <= len(fields) <= arity[1] or not all(f.strip() for f in fields):
        raise ValueError(f"--data {spec!r}: expected {DATA_KINDS[kind]}")
    if kind == "toyworld":
        split = fields[0]
        if split not in SPLIT_SIZES:
            raise ValueError(f"--data {spec!r}: unknown split {split!r}; expected one of {sorted(SPLIT_SIZES)}")
        if len(fields) == 2:
            available = SPLIT_SIZES[split]
            if not fields[1].strip().isdigit() or not 1 <= int(fields[1]) <= available:
                raise ValueError(f"--data {spec!r}: COUNT must be a whole number from 1 to {available} (the size of "
                                 f"the toy world's {split!r} split), got {fields[1]!r}")
    return DataSpec(kind, fields, spec)


def toy_count(spec: DataSpec) -> int | None:
    """N of ``toyworld:SPLIT:N`` (None: the whole split)."""
    return int(spec.fields[1]) if spec.kind == "toyworld" and len(spec.fields) == 2 else None


# -- webdataset shards -------------------------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """webdataset's brace notation: ``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept);
    ``{a,b}`` lists alternatives; several groups multiply out."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail, body = pattern[:match.start()], pattern[match.end():], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        if int(last) < int(first):
            raise ValueError(f"shard pattern {pattern!r}: range {{{body}}} runs backwards")
        options = [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return [head + option + rest for option in options for rest in expand_braces(tail)]


def shard_paths(pattern: str) -> list[Path]:
    """The shard files of a ``wds:`` pattern, each checked to exist."""
    paths = [Path(p) for p in expand_braces(pattern)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"wds:{pattern}: {len(missing)} of {len(paths)} shard(s) missing, e.g. {missing[0]}")
    return paths


@dataclass
class ImageFiles:
    """Image files read when asked: ``image(i)`` is ``load_image(paths[i])``."""

    paths: list[Path]

    def image(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])


# -- retrieval ---------------------------------------------------------------------------------------------------

@dataclass
class RetrievalData:
    """Images, captions and which image each caption belongs to; toy-world sets add which captions truly describe
    which images (semantic recall) and the ceiling that ambiguity leaves."""

    name: str
    source: object                       # anything with image(i)
    count: int                           # images
    captions: list[str]
    text_image: list[int]
    described: np.ndarray | None = None  # bool [caption, image], toy world only

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> np.ndarray:
        return self.source.image(index)

    def ceiling(self) -> dict[str, float]:
        return ceiling_of(self.described) if self.described is not None else {}


def open_retrieval(spec: DataSpec, image_size: int = 64) -> RetrievalData:
    """The retrieval set ``spec`` names (toyworld, karpathy or wds)."""
    if spec.kind == "toyworld":
        world = ToyWorld(spec.fields[0], image_size=image_size)
        count = toy_count(spec) or len(world)
        captions = [world.scene(i).caption for i in range(count)]
        return RetrievalData(spec.name, world, count, captions, list(range(count)), positives(world, count))
    if spec.kind == "karpathy":
        split = spec.fields[2] if len(spec.fields) > 2 else "test"
        data: RetrievalSet = karpathy(spec.fields[0], spec.fields[1], split)
        return RetrievalData(spec.name, data, len(data), data.captions, data.text_image)
    if spec.kind == "wds":
        samples = ShardIndex(shard_paths(spec.fields[0]))
        if not len(samples):
            raise DatasetError(f"--data {spec.text!r}: the shards hold no samples")
        captions = [samples.caption(i) for i in range(len(samples))]
        return RetrievalData(spec.name, samples, len(samples), captions, list(range(len(samples))))
    raise ValueError(f"--data {spec.text!r}: retrieval reads toyworld, karpathy or wds data, not {spec.kind}")


# -- VQA ---------------------------------------------------------------------------------------------------------

@dataclass
class VQAData:
    """Questions with their image and annotator answers (``question_types`` when the data gives them)."""

    name: str
    source: object                       # anything with image(i): the toy world or ImageFiles
    questions: list[str]
    answers: list[list[str]]
    question_types: list[str]

    def __len__(self) -> int:
        return len(self.questions)

    def image(self, index: int) -> np.ndarray:
        return self.source.image(index)


def _image_index(root: Path) -> dict[int, Path]:
    """VQA v2 images by id: COCO names end in the zero-padded image id (``COCO_val2014_000000000042.jpg``)."""
    found: dict[int, Path] = {}
    for path in root.iterdir() if root.is_dir() else ():
        match = re.search(r"(\d+)$", path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(int(match.group(1)), path)
    return found


def open_vqa(spec: DataSpec, image_size: int = 64) -> VQAData:
    """VQA v2 (``vqa:QUESTIONS:ANNOTATIONS:ROOT``) or the toy world's questions (``toyworld:...``)."""
    if spec.kind == "toyworld":
        world = ToyWorld(spec.fields[0], image_size=image_size)
        scenes = [world.scene(i) for i in range(toy_count(spec) or len(world))]
        return VQAData(spec.name, world, [s.question for s in scenes], [[s.answer] for s in scenes],
                       [s.question_type for s in scenes])
    if spec.kind != "vqa":
        raise ValueError(f"--data {spec.text!r}: VQA reads toyworld or vqa data, not {spec.kind}")
    questions_file, annotations_file, root = (Path(f) for f in spec.fields)
    questions = read_json_object(questions_file, "VQA questions file", DatasetError).get("questions")
    annotations = read_json_object(annotations_file, "VQA annotations file", DatasetError).get("annotations")
    if not isinstance(questions, list) or not isinstance(annotations, list):
        raise DatasetError(f"{questions_file} / {annotations_file}: expected VQA v2 files (an object with "
                           "'questions' and one with 'annotations', each a list)")
    by_id = {}
    for n, entry in enumerate(annotations):
        if not isinstance(entry, dict) or "question_id" not in entry or not isinstance(entry.get("answers"), list):
            raise DatasetError(f"{annotations_file}: annotations[{n}] needs question_id and a list of answers")
        by_id[entry["question_id"]] = entry
    images = _image_index(root)
    paths, texts, answers, types = [], [], [], []
    for n, entry in enumerate(questions):
        where = f"{questions_file}: questions[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or "image_id" not in entry:
            raise DatasetError(f"{where} needs question (text), question_id and image_id")
        annotation = by_id.get(entry.get("question_id"))
        if annotation is None:
            raise DatasetError(f"{where}: question_id {entry.get('question_id')!r} has no entry in {annotations_file}")
        image = images.get(entry["image_id"]) if isinstance(entry["image_id"], int) else None
        if image is None:
            raise DatasetError(f"{where}: no image for image_id {entry['image_id']!r} under {root} (expected a file "
                               "named like COCO_val2014_<zero-padded id>.jpg)")
        paths.append(inside(root, image.name, where))
        texts.append(entry["question"])
        answers.append([str(a.get("answer", "")) for a in annotation["answers"] if isinstance(a, dict)])
        types.append(str(annotation.get("question_type", "all")))
    if not texts:
        raise DatasetError(f"{questions_file}: no questions")
    return VQAData(spec.name, ImageFiles(paths), texts, answers, types)


# -- zero-shot classification ------------------------------------------------------------------------------------

@dataclass
class ClassificationData:
    """Labelled images, class names in label order and prompt templates (``{}`` or ``{c}`` for the class)."""

    name: str
    source: object                       # anything with image(i): the toy world or ImageFiles
    labels: list[int]
    classnames: list[str]
    templates: Sequence[str]

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        return self.source.image(index)


def _lines(path: str | Path, what: str) -> list[str]:
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{what} {path} cannot be read ({err})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetError(f"{what} {path} is empty")
    return lines


def _folder_key(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def open_classification(spec: DataSpec, classnames_file: str | None = None, templates_file: str | None = None,
                        image_size: int = 64) -> ClassificationData:
    """``folder:ROOT`` (one sub-folder per class) or the toy world's zero-shot split. ``--classnames`` lists the
    classes in label order, one per line: ``NAME`` (its folder is NAME with ``_`` for spaces) or ``FOLDER<tab>NAME``
    (e.g. ImageNet's ``n01440764<tab>tench``); without it the sorted folder names are the classes. Templates:
    ``--templates`` (one per line, ``{}`` for the class), else CLIP's ImageNet ones."""
    if spec.kind == "toyworld":
        world = ToyWorld("zeroshot", image_size=image_size)
        count = toy_count(spec) or len(world)
        labels = [world.classification(i)[1] for i in range(count)]
        return ClassificationData("toyworld:zeroshot", world, labels, class_names(), ZEROSHOT_TEMPLATES)
    if spec.kind != "folder":
        raise ValueError(f"--data {spec.text!r}: zero-shot classification reads toyworld or folder data")
    root = Path(spec.fields[0])
    if not root.is_dir():
        raise DatasetError(f"--data {spec.text!r}: {root} is not a directory")
    folders = {_folder_key(p.name): p for p in sorted(root.iterdir()) if p.is_dir()}
    names, keys = [p.name for p in folders.values()], list(folders)
    if classnames_file:  # "NAME" (folder = NAME with '_' for spaces) or "FOLDER<tab>NAME" (ImageNet's wnids)
        pairs = [line.split("\t", 1) if "\t" in line else [line, line] for line in _lines(classnames_file,
                                                                                           "--classnames")]
        keys, names = [_folder_key(f) for f, _ in pairs], [n.strip() for _, n in pairs]
    missing = [n for n, k in zip(names, keys) if k not in folders]
    unlisted = sorted(set(folders) - set(keys))
    if unlisted:
        raise DatasetError(f"{root}: folder(s) {unlisted[:5]} are not in --classnames {classnames_file}; their images "
                           "would have no label")
    if missing:
        warnings.warn(f"{root}: {len(missing)} of {len(names)} classes have no folder (e.g. {missing[0]!r}); they stay "
                      "in the classifier with no images", stacklevel=2)
    paths, labels = [], []
    for label, key in enumerate(keys):
        folder = folders.get(key)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder else []
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    templates = _lines(templates_file, "--templates") if templates_file else IMAGENET_TEMPLATES
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad:
        raise DatasetError(f"--templates {templates_file}: template {bad[0]!r} has no '{{}}' or '{{c}}' for the class")
    return ClassificationData(spec.name, ImageFiles(paths), labels, [n.replace("_", " ") for n in names], templates)
