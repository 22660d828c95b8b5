"""Where a fusion model looks when it answers, and what its answer state holds (toy world).

``question_cell_attention``: the share of the fusion layers' [CLS] cross-attention that falls on the cell a question
is about (``vlprune.data.cells.target_cell_attention``, averaged over layers and heads). Attention spread evenly over
the image [CLS] and the 64 patches of a toy model puts 4/65 ≈ 0.06 on a cell. ``question_object_probe``: linear
read-outs of the asked-about object's shape from the fused [CLS] and from that cell's own patch tokens. Together they
tell a model that cannot find the object from one that finds it and cannot read it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from vlprune.data.cells import cell_patch_grid, pool_cells, target_cell_attention
from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import SHAPES, Scene, ToyWorld
from vlprune.eval.cell_probe import linear_probe
from vlprune.models.fusion import FusionModel
from vlprune.models.layers import TokenState
from vlprune.tokenizer import WordTokenizer


def _question_passes(model: FusionModel, tokenizer: WordTokenizer, world: ToyWorld, count: int, batch_size: int
                     ) -> Iterator[tuple[list[Scene], TokenState, torch.Tensor, dict[str, torch.Tensor]]]:
    """The first ``count`` scenes in batches: (scenes, image tokens, fused [CLS] of their questions, the fusion
    layers' [CLS] cross-attention)."""
    if not isinstance(model, FusionModel):
        raise ValueError("question grounding needs a fusion model (kind='fusion'), e.g. toy-fusion")
    if not 0 < count <= len(world):
        raise ValueError(f"count={count}: expected 1..{len(world)} scenes of split {world.split!r}")
    model.eval()
    for start in range(0, count, batch_size):
        indices = range(start, min(count, start + batch_size))
        scenes = [world.scene(i) for i in indices]
        ids, mask = tokenizer([s.question for s in scenes])
        image = model.visual(to_pixels([world.image(i) for i in indices], model.config.vision))
        recorded: dict[str, torch.Tensor] = {}
        fused = model.fuse(model.fusion_input(ids, mask), image, recorded).x[:, 0]
        yield scenes, image, fused, recorded


@torch.no_grad()
def question_cell_attention(model: FusionModel, tokenizer: WordTokenizer, world: ToyWorld, count: int,
                            batch_size: int = 128) -> dict[str, float]:
    """Mean share on the question's cell per question type about one object (colour, shape, size, where) and over
    all of them (``all``), for the first ``count`` scenes of ``world``."""
    shares, types = [], []
    patch_grid = cell_patch_grid(model.config.vision, "question-cell attention")
    for scenes, _, _, recorded in _question_passes(model, tokenizer, world, count, batch_size):
        cells = torch.tensor([s.question_cell for s in scenes])
        shares.append(target_cell_attention(list(recorded.values()), cells, patch_grid))
        types += [s.question_type if s.question_cell >= 0 else "" for s in scenes]
    share, kinds = torch.cat(shares).numpy(), np.array(types)
    result = {kind: float(share[kinds == kind].mean()) for kind in sorted(set(types) - {""})}
    return {**result, "all": float(share[kinds != ""].mean())}


@torch.no_grad()
def _object_features(model: FusionModel, tokenizer: WordTokenizer, world: ToyWorld, count: int, batch_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every question that names a cell (colour / shape / size, not "where is the <colour> <shape>", whose text
    gives the shape away): the fused [CLS], the mean patch token of the object's cell and the object's shape index."""
    patch_grid = cell_patch_grid(model.config.vision, "the question-object probe")
    fused_rows, cell_rows, shapes = [], [], []
    for scenes, image, fused, _ in _question_passes(model, tokenizer, world, count, batch_size):
        cells = pool_cells(image.x[:, 1:], patch_grid)
        for row, scene in enumerate(scenes):
            if scene.question_cell >= 0 and scene.question_type != "where":
                fused_rows.append(fused[row])
                cell_rows.append(cells[row, scene.question_cell])
                shapes.append(next(SHAPES.index(o.shape) for o in scene.objects if o.cell == scene.question_cell))
    return torch.stack(fused_rows), torch.stack(cell_rows), torch.tensor(shapes)


def question_object_probe(model: FusionModel, tokenizer: WordTokenizer, train: ToyWorld, val: ToyWorld,
                          train_count: int = 2000, val_count: int = 1000, steps: int = 300, seed: int = 0,
                          batch_size: int = 128) -> dict[str, float]:
    """``fused_shape``: accuracy on ``val`` of a linear probe (``vlprune.eval.cell_probe.linear_probe``, fit on
    ``train``) of the asked-about object's shape from the fused [CLS] of a question that names its cell;
    ``cell_shape``: the same from the mean patch token of the object's cell (what the image tower offers). Chance
    0.2."""
    fit = _object_features(model, tokenizer, train, train_count, batch_size)
    held_out = _object_features(model, tokenizer, val, val_count, batch_size)
    generator = torch.Generator().manual_seed(seed)
    return {f"{name}_shape": linear_probe(fit[k], fit[2], held_out[k], held_out[2], len(SHAPES), steps,
                                          generator).float().mean().item()
            for k, name in enumerate(("fused", "cell"))}
