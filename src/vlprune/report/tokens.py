"""Token-keep maps: for sample images, which patches survive each reduction step and what every merged token
covers, read from ``TokenState.source`` (the patches each token stands for) after each block."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from vlprune.models.layers import TokenState


@dataclass
class KeepMap:
    """After ``layer``: ``owner[p]`` = the token that patch ``p`` now belongs to (-1: dropped, prune-only
    methods), ``alone[p]`` = it is still its own token (kept), ``tokens`` = the sequence length with [CLS]."""

    layer: int
    owner: np.ndarray  # (grid, grid) int
    alone: np.ndarray  # (grid, grid) bool
    tokens: int


@torch.no_grad()
def keep_maps(model, pixel_values: torch.Tensor, guide: torch.Tensor | None = None) -> list[list[KeepMap]]:
    """Per image, one ``KeepMap`` after every block where the token count changed (the method must already be
    applied to ``model``). Source tracing is switched on for this call only."""
    visual = model.visual
    seen: list[tuple[int, TokenState]] = []
    hooks = [block.register_forward_hook(lambda mod, args, out, i=i: seen.append((i, out)))
             for i, block in enumerate(visual.blocks)]
    tracing, visual.trace_source = visual.trace_source, True
    try:
        visual(pixel_values, guide=guide)
    finally:
        visual.trace_source = tracing
        for hook in hooks:
            hook.remove()
    grid = int(round((visual.cfg.num_patches) ** 0.5))
    maps: list[list[KeepMap]] = [[] for _ in range(pixel_values.shape[0])]
    previous = visual.cfg.num_patches + 1
    for layer, state in seen:
        count = state.x.shape[1]
        if count == previous:
            continue
        previous = count
        patches = state.source[:, 1:, 1:]  # tokens after [CLS] x original patches
        for b in range(pixel_values.shape[0]):
            covered = patches[b].sum(dim=0) > 0
            owner = torch.where(covered, patches[b].argmax(dim=0), -1)  # a patch is in one token or dropped
            alone = covered & (patches[b].sum(dim=1)[owner.clamp_min(0)] == 1)
            maps[b].append(KeepMap(layer, owner.reshape(grid, grid).numpy(), alone.reshape(grid, grid).numpy(),
                                   count))
    return maps


def overlay(image: np.ndarray, keep: KeepMap) -> np.ndarray:
    """``image`` (H, W, 3) uint8: kept patches as they are, each merged group tinted in its own colour, dropped
    patches darkened."""
    grid = keep.owner.shape[0]
    cell = image.shape[0] // grid
    out = image.astype(np.float32).copy()
    palette = plt.get_cmap("tab20")
    for r in range(grid):
        for c in range(grid):
            if keep.alone[r, c]:
                continue
            owner = int(keep.owner[r, c])
            tint = np.zeros(3) if owner < 0 else np.array(palette(owner % 20)[:3]) * 255
            block = out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            block[:] = 0.25 * block + 0.75 * tint
    return out.clip(0, 255).astype(np.uint8)


def keep_map_figure(images: list[np.ndarray], maps_by_method: dict[str, list[list[KeepMap]]],
                    captions: list[str] | None = None) -> plt.Figure:
    """Rows: methods (last reduction step of each), columns: images. Kept patches show the image; merged or
    pruned patches are tinted by the token that absorbed them."""
    methods = list(maps_by_method)
    fig, axes = plt.subplots(len(methods) + 1, len(images), figsize=(1.8 * len(images), 1.9 * (len(methods) + 1)),
                             squeeze=False)
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        axes[0, j].set_title(captions[j][:40] if captions else f"image {j}", fontsize=5)
        for i, method in enumerate(methods, start=1):
            steps = maps_by_method[method][j]
            axes[i, j].imshow(overlay(image, steps[-1]) if steps else image)
            title = f"{steps[-1].tokens} tokens, {int(steps[-1].alone.sum())} kept" if steps else "all kept"
            axes[i, j].set_title(f"{method}: {title}", fontsize=5)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
