"""Toy-world datasets as the trainer and evaluators consume them: items, then collated tensor batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlprune.config import VisionConfig
from vlprune.data.images import Preprocess
from vlprune.data.toyworld import ANSWERS, Scene, ToyWorld, cell_targets, colour_targets, render
from vlprune.tokenizer import WordTokenizer

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
class Collate:
    """Stacks items into tensors: ``pixel_values``, caption ``input_ids``/``attention_mask``, question ids, answers."""

    tokenizer: WordTokenizer
    vision: VisionConfig

    def __call__(self, items: list[dict | list[dict]]) -> dict[str, torch.Tensor]:
        items = [pair for it in items for pair in (it if isinstance(it, list) else [it])]
        ids, mask = self.tokenizer([it["caption"] for it in items])
        q_ids, q_mask = self.tokenizer([it["question"] for it in items])
        return {"pixel_values": to_pixels([it["image"] for it in items], self.vision),
                "input_ids": ids, "attention_mask": mask, "question_ids": q_ids, "question_mask": q_mask,
                "answer": torch.tensor([it["answer"] for it in items]),
                "question_cell": torch.tensor([it["question_cell"] for it in items]),
                "index": torch.tensor([it["index"] for it in items]),
                **{key: torch.from_numpy(np.stack([it[key] for it in items]))
                   for key in SCENE_TARGETS if key in items[0]}}
