"""One tower of a CLIP model run in pieces — embed, blocks ``start:end``, final norm + pooling + projection —
so fast MoPE can re-run only the blocks after a cached layer input, and distillation can read every block's
output. Composed from the towers' own ``begin``/``embed``/``run``/``norm``; ``towers.encode`` equals
``model.encode_image`` / ``encode_text`` (normalised)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from vlprune.data.pairs import Collate, to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.models.io import Model
from vlprune.models.layers import ForwardContext, TokenState
from vlprune.structured.plan import TOWERS, tower_config
from vlprune.tokenizer import WordTokenizer

Batch = dict[str, torch.Tensor]


@dataclass
class Pairs:
    """Preprocessed image-text pairs (caption i describes image i), kept in memory as tensors."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @classmethod
    def from_world(cls, world: ToyWorld, count: int, tokenizer: WordTokenizer, model: Model) -> Pairs:
        """The first ``count`` scenes of a toy-world split, preprocessed for ``model``."""
        if not 1 <= count <= len(world):
            raise ValueError(f"count={count}: expected 1..{len(world)} pairs of the {world.split!r} split")
        ids, mask = tokenizer([world.scene(i).caption for i in range(count)])
        pixels = to_pixels([world.image(i) for i in range(count)], model.config.vision)
        return cls(pixels, ids, mask)

    @classmethod
    def from_items(cls, items: Sequence[dict], collate: Collate) -> Pairs:
        """Items of a pairs dataset (``vlprune.data.pairs.open_pairs``), collated for the model by ``collate``."""
        batch = collate([items[i] for i in range(len(items))])
        return cls(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])

    def __len__(self) -> int:
        return len(self.input_ids)

    def batches(self, size: int) -> list[Batch]:
        """Consecutive batches with the keys ``Collate`` uses (``pixel_values``, ``input_ids``, ``attention_mask``)."""
        return [{"pixel_values": self.pixel_values[i:i + size], "input_ids": self.input_ids[i:i + size],
                 "attention_mask": self.attention_mask[i:i + size]} for i in range(0, len(self), size)]


@dataclass
class Partial:
    """A tower pass stopped before some block: the tokens and the context the blocks share."""

    state: TokenState
    ctx: ForwardContext


def other(tower: str) -> str:
    """The tower that is not ``tower``."""
    if tower not in TOWERS:
        raise ValueError(f"tower={tower!r}: expected one of {TOWERS}")
    return TOWERS[1 - TOWERS.index(tower)]


def begin(model: Model, tower: str, batch: Batch) -> Partial:
    """Embedded tokens entering block 0."""
    tower_config(model.config, tower)
    if tower == "vision":
        return Partial(*model.visual.begin(batch["pixel_values"]))
    return Partial(model.text.embed(batch["input_ids"], batch["attention_mask"]), model.text.context())


def run(model: Model, tower: str, part: Partial, start: int = 0, end: int | None = None,
        hidden: list[torch.Tensor] | None = None) -> Partial:
    """Blocks ``start:end``; with ``hidden``, every block's output tokens are appended to it."""
    end = tower_config(model.config, tower).num_layers if end is None else end
    steps = [(i, i + 1) for i in range(start, end)] if hidden is not None else [(start, end)]
    state = part.state
    for first, last in steps:
        if tower == "vision":
            state = model.visual.run(state, part.ctx, first, last)
        else:
            state = model.text.run(state, part.ctx, first, last, use_cross=False)
        if hidden is not None:
            hidden.append(state.x)
    return Partial(state, part.ctx)


def finish(model: Model, tower: str, part: Partial, batch: Batch, normalize: bool = True) -> torch.Tensor:
    """Final norm, pooling and projection of a completed pass: the tower's embedding."""
    if tower == "vision":
        return model.image_embedding(replace(part.state, x=model.visual.norm(part.state.x)), normalize)
    return model.text_embedding(replace(part.state, x=model.text.norm(part.state.x)), batch["input_ids"],
                                batch["attention_mask"], normalize)


def encode(model: Model, tower: str, batches: list[Batch]) -> torch.Tensor:
    """Normalised embeddings of every batch, concatenated."""
    return torch.cat([finish(model, tower, run(model, tower, begin(model, tower, b)), b) for b in batches])
