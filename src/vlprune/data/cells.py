"""The toy world's 4x4 cells on a model's patch grid: which patch tokens make up each cell.

Shared by scene supervision (``vlprune.train.scene``) and the measurements that read cells back
(``vlprune.eval.cell_probe``, ``vlprune.eval.grounding``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlprune.config import VisionConfig
from vlprune.data.toyworld import GRID


def cell_patch_grid(vision: VisionConfig, what: str) -> int:
    """The side of the model's patch grid, checked to divide into the toy world's 4x4 cells (``what`` names the
    caller in the error)."""
    grid = vision.image_size // vision.patch_size
    if grid % GRID:
        raise ValueError(f"{what} pools patches into a {GRID}x{GRID} grid of cells, but the model's {grid}x{grid} "
                         f"patch grid does not divide into it; use image_size / patch_size as a multiple of {GRID}")
    return grid


def pool_cells(patch_tokens: torch.Tensor, patch_grid: int) -> torch.Tensor:
    """(B, patch_grid², width) in raster order -> (B, cells, width), each of the 4x4 cells the mean of its patches."""
    b, _, w = patch_tokens.shape
    grid = patch_tokens.reshape(b, patch_grid, patch_grid, w).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(grid, GRID).flatten(2).transpose(1, 2)


def target_cell_attention(cross_cls_attn: list[torch.Tensor], cells: torch.Tensor, patch_grid: int) -> torch.Tensor:
    """The share (B,) of the fusion layers' [CLS] cross-attention (each (B, H, 1 + patches), [CLS] key first;
    averaged over layers and heads) that falls on the patches of cell ``cells`` (B,) — the object a question is
    about. Rows whose cell is -1 (count / exists questions) get 0."""
    attn = torch.stack(cross_cls_attn).mean(dim=(0, 2))  # (B, 1 + patches)
    if attn.shape[1] != patch_grid**2 + 1:
        raise ValueError(f"the share on a question's cell needs every patch token, but the cross-attention covers "
                         f"{attn.shape[1]} image tokens, not 1 + {patch_grid**2}; train or measure it without a "
                         "token-reduction method")
    patch = torch.arange(patch_grid**2, device=attn.device)
    patch_cell = (patch // patch_grid * GRID // patch_grid) * GRID + patch % patch_grid * GRID // patch_grid
    per_cell = attn[:, 1:] @ F.one_hot(patch_cell, GRID * GRID).to(attn.dtype)  # (B, cells)
    return per_cell.gather(1, cells.clamp(min=0)[:, None]).squeeze(1) * (cells >= 0)
