"""Toy-world datasets as the trainer and evaluators consume them: items, then collated tensor batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlprune.config import VisionConfig
from vlprune.data.toyworld import ANSWERS, ToyWorld
from vlprune.tokenizer import WordTokenizer


def to_pixels(images: np.ndarray | list[np.ndarray], vision: VisionConfig) -> torch.Tensor:
    """uint8 (B, H, W, 3) images at the model's size -> normalised float (B, 3, H, W)."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim != 4 or arr.shape[1:3] != (vision.image_size, vision.image_size):
        raise ValueError(f"images must be (B, {vision.image_size}, {vision.image_size}, 3) uint8, got {arr.shape}")
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(vision.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(vision.image_std).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclass
class ToyPairs:
    """Image, caption, question and answer of each scene of a toy-world split."""

    world: ToyWorld

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> dict:
        scene = self.world.scene(index)
        return {"index": index, "image": self.world.image(index), "caption": scene.caption,
                "question": scene.question, "answer": ANSWERS.index(scene.answer), "qtype": scene.question_type}


@dataclass
class Collate:
    """Stacks items into tensors: ``pixel_values``, caption ``input_ids``/``attention_mask``, question ids, answers."""

    tokenizer: WordTokenizer
    vision: VisionConfig

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenizer([it["caption"] for it in items])
        q_ids, q_mask = self.tokenizer([it["question"] for it in items])
        return {"pixel_values": to_pixels([it["image"] for it in items], self.vision),
                "input_ids": ids, "attention_mask": mask, "question_ids": q_ids, "question_mask": q_mask,
                "answer": torch.tensor([it["answer"] for it in items]),
                "index": torch.tensor([it["index"] for it in items])}
