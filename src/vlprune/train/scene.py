"""Scene supervision: auxiliary per-cell attribute losses that the toy world's generator makes possible.

Contrastive training on the toy world suffers *feature suppression*: colour alone separates most in-batch
negatives, so the towers stop at a bag of colours and never learn shape, size or position (measured: caption
embeddings that differ only in those words had cosine 1.000). The generator knows every scene's contents, so
the towers can be told directly what is where — the toy-world analogue of the dense / region supervision of
detection-pretrained VLMs. Linear probes, trained with the model and dropped when it is saved:

* ``image_cells``: every cell's pooled patch tokens -> (colour, shape, size) of the object there, or empty, and
  the cell's own row and column (so tokens keep *where* they are: without it, the fusion model answered
  "what colour is the object at top left" near chance while counting right — measured on toy-fusion);
* ``image_colours``: the image embedding -> for each colour, the rows, columns, shapes and sizes of the objects
  of that colour (multi-hot; ``ToyWorld.colour_targets``): attributes bound to colour, linearly readable;
* ``text_colours``: the caption embedding -> the same, for what the caption says (entries it leaves open are
  masked);
* ``fused_object`` (fusion models, task ``ground_object``): the fused [CLS] of a VQA question -> the colour, shape,
  size, row and column of the object the question is about.

``grounding_loss`` (task ``ground``, on ``vlprune.data.cells.target_cell_attention``) tells the fusion layers'
[CLS] cross-attention to look at that object's cell.

A first version read every cell's attributes from the embeddings (16 cells x 18 classes); those probes
collapsed to "empty" for every cell (0 % on occupied cells after 1,000 steps) and did not move the embeddings,
so they were replaced by the colour-bound, multi-hot targets above.

``SceneProbes`` wraps the trained model like ``MomentumQueue`` so the probes are optimised and checkpointed
with it; ``vlprune.save`` is called on ``wrapper.model``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprune.config import ModelConfig
from vlprune.data.cells import cell_patch_grid, pool_cells
from vlprune.data.toyworld import ATTRIBUTE_CLASSES, COLOUR_TARGET_WIDTH, COLOURS, GRID

SCENE_LOSSES = ("mean", "balanced")
"""How the probes' per-entry losses are averaged. ``mean``: over every cell / entry, so the 12-14 empty cells of a
scene and the zeros of the multi-hot targets dominate (an object's shape is about 2 % of the scene loss); the
shipped toy models were trained with it. ``balanced``: the mean over occupied cells (positive entries) plus the
mean over empty cells (negative entries), per attribute."""


class SceneProbes(nn.Module):
    """The trained module (the model, or its ``MomentumQueue``) plus the three attribute probes (see the module
    docstring); ``config`` is the model's, ``loss`` one of ``SCENE_LOSSES``."""

    def __init__(self, model: nn.Module, config: ModelConfig, loss: str = "mean"):
        super().__init__()
        if loss not in SCENE_LOSSES:
            raise ValueError(f"scene loss {loss!r}: expected one of {SCENE_LOSSES} (see vlprune.train.scene)")
        self.balanced = loss == "balanced"
        vision = config.vision
        self.model, self.patch_grid = model, cell_patch_grid(vision, "scene supervision")
        classes = sum(ATTRIBUTE_CLASSES.values())
        self.image_cells = nn.Linear(vision.width, classes + 2 * GRID)
        per_colour = len(COLOURS) * COLOUR_TARGET_WIDTH
        self.image_colours = nn.Linear(config.embed_dim, per_colour)
        self.text_colours = nn.Linear(config.embed_dim, per_colour)
        # task 'ground_object': a question's fused [CLS] -> what and where its object is (fusion models only)
        self.fused_object = nn.Linear(config.text.width, classes + 2 * GRID) if config.kind == "fusion" else None

    def cell_features(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """(B, patches, width) in raster order -> (B, cells, width), each cell the mean of its patches."""
        return pool_cells(patch_tokens, self.patch_grid)

    def losses(self, image_tokens: torch.Tensor, image_emb: torch.Tensor, text_emb: torch.Tensor | None,
               batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the cell probe (averaged over cells as ``SCENE_LOSSES`` says, then over attributes; its
        row / column part, a plain mean, under ``scene_where``) and binary cross-entropy of the colour probes (over
        decided entries, averaged likewise);
        ``image_tokens`` are the final tokens, [CLS] first, all patches present (no token reduction)."""
        if image_tokens.shape[1] != self.patch_grid**2 + 1:
            raise ValueError("task 'scene' needs every patch token; train it without a token-reduction method")
        cells = self.image_cells(self.cell_features(image_tokens[:, 1:]))
        what, row, col = cells.split([cells.shape[-1] - 2 * GRID, GRID, GRID], dim=-1)
        where = torch.arange(GRID * GRID, device=cells.device)
        out = {"scene_cells": self._attribute_loss(what, batch["image_cells"]),
               "scene_where": (F.cross_entropy(row.flatten(0, 1), (where // GRID).repeat(len(cells)))
                               + F.cross_entropy(col.flatten(0, 1), (where % GRID).repeat(len(cells)))) / 2,
               "scene_image": self._bce(self.image_colours(image_emb), batch["image_colours"].flatten(1))}
        if text_emb is not None:
            known = batch["caption_colours_known"].flatten(1)
            out["scene_text"] = self._bce(self.text_colours(text_emb), batch["caption_colours"].flatten(1), known)
        return out

    def object_loss(self, fused_cls: torch.Tensor, image_cells: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a linear read-out of the fused [CLS] (B, width) of each question about one object
        (``cells`` (B,) >= 0) -> that object's colour, shape, size (``image_cells`` (B, 3, cells) at its cell), row
        and column; the mean over the five. It asks every such question's pass to carry all of the object, not only
        the attribute asked (4 in 6 questions then train the read-out of shape, 1 in 6 without it)."""
        if self.fused_object is None:
            raise ValueError("task 'ground_object' needs a fusion model (kind='fusion')")
        about = cells >= 0
        logits = self.fused_object(fused_cls[about])
        if not about.any():  # keep the graph (every rank back-propagates through the same parameters)
            return logits.sum()
        what, row, col = logits.split([logits.shape[-1] - 2 * GRID, GRID, GRID], dim=-1)
        cell = cells[about]
        held = image_cells[about].gather(2, cell[:, None, None].expand(-1, 3, 1)).squeeze(2)  # (n, 3)
        parts = what.split(list(ATTRIBUTE_CLASSES.values()), dim=-1)
        total = sum(F.cross_entropy(part, held[:, i]) for i, part in enumerate(parts))
        return (total + F.cross_entropy(row, cell // GRID) + F.cross_entropy(col, cell % GRID)) / (len(parts) + 2)

    def _bce(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """Binary cross-entropy over the decided entries (``known``; all when None), averaged as ``SCENE_LOSSES``
        says."""
        per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.balanced:
            return _balanced_mean(per_entry if known is None else per_entry[known],
                                  (targets if known is None else targets[known]) > 0.5)
        if known is None:
            return per_entry.mean()
        return (per_entry * known.float()).sum() / known.float().sum().clamp(min=1)

    def _attribute_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (B, cells, sum of classes), targets (B, 3, cells): cross-entropy per cell, averaged per attribute
        as ``SCENE_LOSSES`` says (occupied cells are the positives), then over the attributes."""
        total = torch.zeros((), device=logits.device)
        for i, part in enumerate(logits.split(list(ATTRIBUTE_CLASSES.values()), dim=-1)):
            per_cell = F.cross_entropy(part.flatten(0, 1), targets[:, i].flatten(), reduction="none")
            total = total + (_balanced_mean(per_cell, targets[:, i].flatten() > 0) if self.balanced
                             else per_cell.mean())
        return total / len(ATTRIBUTE_CLASSES)


def _balanced_mean(values: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over the positive entries plus mean over the negative ones (a side with no entries adds nothing)."""
    return sum(values[side].mean() for side in (positive, ~positive) if side.any())


def grounding_loss(share: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Attention supervision for VQA: mean of -log ``share`` (``vlprune.data.cells.target_cell_attention``) over the
    questions about one object (0 when the batch has none), so the fusion layers learn to look where the question
    points."""
    about_one = cells >= 0
    return -(share[about_one].clamp(min=1e-6).log()).sum() / about_one.sum().clamp(min=1)
