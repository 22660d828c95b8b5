"""Training pairs as the trainer and evaluators consume them: items from any ``--data`` set, then collated
tensor batches.

An item is a dict with ``index``, ``image`` (RGB uint8) and ``caption``; toy-world items (``ToyPairs``) add the
question, answer and scene targets that the toy-only tasks (VQA, scene, grounding) train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Subset

from vlprune.config import VisionConfig
from vlprune.data.images import Preprocess
from vlprune.data.real import RetrievalSet, karpathy
from vlprune.data.shards import ShardIndex
from vlprune.data.sources import DATA_KINDS, DataSpec, shard_paths, toy_count
from vlprune.data.toyworld import ANSWERS, SPLIT_SIZES, Scene, ToyWorld, cell_targets, colour_targets, render
from vlprune.tokenizer import WordTokenizer

PAIR_KINDS = ("toyworld", "karpathy", "wds")
PAIR_DATA_HELP = ", ".join(DATA_KINDS[kind] for kind in PAIR_KINDS)
"""The ``--data`` kinds that hold image-caption pairs, which ``vlprune train`` and ``vlprune prune`` read."""
SCENE_TARGETS = ("image_cells", "image_colours", "caption_colours", "caption_colours_known")


def to_pixels(images: Sequence[np.ndarray], vision: VisionConfig) -> torch.Tensor:
    """Images (uint8 arrays or PIL) -> normalised float (B, 3, H, W) with the model's preprocessing."""
    return Preprocess.for_vision(vision).batch(images)


@dataclass
class ToyPairs:
    """Image, caption, question and answer of each scene of a toy-world split.

    With ``twins`` = T > 0 an item is a list: the scene and T hard-negative twins (``ToyWorld.family``), which
    ``Collate`` puts side by side in the batch, so a batch of B items holds B (T + 1) pairs.
    """

    world: ToyWorld
    twins: int = 0

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> dict | list[dict]:
        if self.twins:
            return [_item(index, scene, self.world.image_size) for scene in self.world.family(index, self.twins)]
        return _item(index, self.world.scene(index), self.world.image_size)


def _item(index: int, scene: Scene, image_size: int) -> dict:
    image_colours, caption_colours, caption_known = colour_targets(scene)
    return {"index": index, "image": render(scene, image_size), "caption": scene.caption,
            "question": scene.question, "answer": ANSWERS.index(scene.answer), "qtype": scene.question_type,
            "question_cell": scene.question_cell,
            "image_cells": cell_targets(scene), "image_colours": image_colours, "caption_colours": caption_colours,
            "caption_colours_known": caption_known}


@dataclass
class CaptionPairs:
    """Image-caption pairs of a Karpathy split: pair ``n`` is caption ``captions[n]`` with its image, so an image
    with five captions gives five pairs (as ALBEF / BLIP fine-tune on COCO). ``captions`` defaults to all."""

    data: RetrievalSet
    captions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.captions = self.captions or list(range(len(self.data.captions)))

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        caption = self.captions[index]
        return {"index": index, "image": self.data.image(self.data.text_image[caption]),
                "caption": self.data.captions[caption]}


def first_captions(data: RetrievalSet) -> list[int]:
    """The first caption of each image, in image order (one pair per image, for retrieval)."""
    first: dict[int, int] = {}
    for caption, image in enumerate(data.text_image):
        first.setdefault(image, caption)
    return [first[image] for image in sorted(first)]


def open_pairs(spec: DataSpec, image_size: int, limit: int | None = None, twins: int = 0, split: str = "train",
               per_image: bool = False) -> Sequence[dict]:
    """The pairs of ``--data`` for training: ``toyworld`` (``ToyPairs``), ``karpathy`` (``CaptionPairs``; split
    from the spec, else ``split``) or ``wds`` (``ShardIndex``, one pair a sample, read by seeking). ``limit``
    keeps the first that many pairs; ``per_image`` keeps only the first caption of each image; ``twins`` (toy
    world only) adds hard-negative twins to each item. Toy-world items are what ``ToyPairs`` always gave."""
    if twins and spec.kind != "toyworld":
        raise ValueError(f"twins={twins}: hard-negative twins exist only in the toy world, not in {spec.text}")
    if limit is not None and limit < 1:
        raise ValueError(f"{limit} pairs asked of {spec.text}: ask for at least 1")
    if spec.kind == "toyworld":
        size = toy_count(spec) or SPLIT_SIZES[spec.fields[0]]
        if limit is not None and limit > size:
            raise ValueError(f"{limit} pairs asked of {spec.text}, which holds {size}; ask for at most {size}")
        return ToyPairs(ToyWorld(spec.fields[0], image_size=image_size, size=limit or size), twins)
    if spec.kind == "karpathy":
        data = karpathy(spec.fields[0], spec.fields[1], spec.fields[2] if len(spec.fields) > 2 else split)
        pairs: Sequence[dict] = CaptionPairs(data, first_captions(data) if per_image else [])
    elif spec.kind == "wds":
        pairs = ShardIndex(shard_paths(spec.fields[0]))
    else:
        raise ValueError(f"{spec.text}: training and pruning read image-caption pairs ({PAIR_DATA_HELP}), not "
                         f"{spec.kind} data")
    if not len(pairs):
        raise ValueError(f"{spec.text} holds no pairs")
    if limit is not None and limit > len(pairs):
        raise ValueError(f"{limit} pairs asked of {spec.text}, which holds {len(pairs)}; ask for at most "
                         f"{len(pairs)}")
    return pairs if limit is None else Subset(pairs, range(limit))


@dataclass
class Collate:
    """Stacks items into tensors: ``pixel_values``, caption ``input_ids``/``attention_mask``, ``index``, and for
    toy-world items question ids, answers and scene targets. ``truncate`` cuts captions longer than the
    tokenizer's context (else such a caption is an error naming its length)."""

    tokenizer: WordTokenizer
    vision: VisionConfig
    truncate: bool = False

    def __call__(self, items: list[dict | list[dict]]) -> dict[str, torch.Tensor]:
        items = [pair for it in items for pair in (it if isinstance(it, list) else [it])]
        ids, mask = self.tokenizer([it["caption"] for it in items], truncate=self.truncate)
        batch = {"pixel_values": to_pixels([it["image"] for it in items], self.vision),
                 "input_ids": ids, "attention_mask": mask, "index": torch.tensor([it["index"] for it in items])}
        if "question" in items[0]:
            batch["question_ids"], batch["question_mask"] = self.tokenizer([it["question"] for it in items])
            batch["answer"] = torch.tensor([it["answer"] for it in items])
            batch["question_cell"] = torch.tensor([it["question_cell"] for it in items])
        return {**batch, **{key: torch.from_numpy(np.stack([it[key] for it in items]))
                            for key in SCENE_TARGETS if key in items[0]}}
