"""Cell probe: can a linear read-out of the image tower's patch tokens tell what each occupied cell holds?

Each occupied cell of a toy-world image is the mean of its patch tokens (``vlprune.data.cells.pool_cells``); a
linear classifier per attribute (colour, shape, size) is fit on the cells of one split and scored on another's.
Chance: 1/8 colour, 1/5 shape, 1/2 size. It separates perception from aggregation: tokens that carry shape read
it here whatever the [CLS] embedding keeps of it (``vlprune.eval.binding`` measures the embedding).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vlprune.data.cells import cell_patch_grid, pool_cells
from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ATTRIBUTE_CLASSES, SIZES, ToyWorld, cell_targets
from vlprune.models.io import Model


@torch.no_grad()
def occupied_cell_features(model: Model, world: ToyWorld, count: int,
                           batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled final patch tokens of every occupied cell of the first ``count`` scenes (cells, width), and their
    (colour, shape, size) codes (cells, 3), 1-based as ``cell_targets``."""
    if not 0 < count <= len(world):
        raise ValueError(f"count={count}: expected 1..{len(world)} scenes of split {world.split!r}")
    vision = model.config.vision
    patch_grid = cell_patch_grid(vision, "the cell probe")
    model.eval()
    features, labels = [], []
    for start in range(0, count, batch_size):
        indices = range(start, min(count, start + batch_size))
        tokens = model.visual(to_pixels([world.image(i) for i in indices], vision)).x[:, 1:]
        cells = pool_cells(tokens, patch_grid)
        targets = torch.from_numpy(np.stack([cell_targets(world.scene(i)) for i in indices]))
        occupied = targets[:, 0] > 0
        features.append(cells[occupied])
        labels.append(targets.transpose(1, 2)[occupied])
    return torch.cat(features), torch.cat(labels)


def cell_probe_accuracy(model: Model, train: ToyWorld, val: ToyWorld, train_count: int = 2000,
                        val_count: int = 1000, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """``probe_colour`` / ``probe_shape`` / ``probe_size``: accuracy on ``val``'s occupied cells of linear probes
    fit (full-batch Adam on standardised features, cross-entropy) on ``train``'s; ``probe_shape_small`` /
    ``probe_shape_big``: the shape probe's accuracy on the cells of each size (a small object spans about a patch)."""
    x_fit, y_fit = occupied_cell_features(model, train, train_count)
    x_val, y_val = occupied_cell_features(model, val, val_count)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for i, (name, classes) in enumerate(ATTRIBUTE_CLASSES.items()):
        right = linear_probe(x_fit, y_fit[:, i], x_val, y_val[:, i], classes, steps, generator)
        out[f"probe_{name}"] = right.float().mean().item()
        if name == "shape":
            size_codes = y_val[:, list(ATTRIBUTE_CLASSES).index("size")]
            for code, size in enumerate(SIZES, start=1):
                out[f"probe_shape_{size}"] = right[size_codes == code].float().mean().item()
    return out


def linear_probe(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, classes: int,
                 steps: int, generator: torch.Generator) -> torch.Tensor:
    """Fit a linear classifier (full-batch Adam, cross-entropy) on standardised ``x_fit`` -> ``y_fit``; return which
    of ``x_val``'s rows it gets right (bool)."""
    mean, std = x_fit.mean(0), x_fit.std(0).clamp(min=1e-6)
    x_fit, x_val = (x_fit - mean) / std, (x_val - mean) / std
    weight = (torch.randn(x_fit.shape[1], classes, generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(x_fit @ weight + bias, y_fit).backward()
        optimizer.step()
    with torch.no_grad():
        return (x_val @ weight + bias).argmax(1) == y_val
