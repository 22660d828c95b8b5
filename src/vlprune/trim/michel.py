"""Gradient head importance (Michel et al., 2019), the paper's head-pruning baseline (SmartTrim appendix C):
``I_h = E_x |A_hᵀ ∂L/∂A_h|`` with ``A_h`` the context of head h — equal to ``E_x |∂L/∂ξ_h|`` for a gate ξ_h = 1
multiplied into the head's output. Scores are normalised per layer (L2), as Michel et al. do; heads are then kept
per layer ("Grad Layer") or over the whole model ("Grad All")."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from vlprune.trim.model import SmartTrim
from vlprune.trim.objective import task_batch, task_head

SCOPES = ("layer", "model")


def head_importance(trim: SmartTrim, task: str, batches: Iterable[dict[str, torch.Tensor]],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per attention module key (``vision.3``, ``text.4.cross``): the importance (H,) of its heads, L2-normalised
    per module, from the untrimmed network on ``batches``."""
    totals: dict[str, torch.Tensor] = {}
    for batch in batches:
        pairs = task_batch(trim, task, batch, generator)
        b = len(pairs.labels)
        probe = {key: torch.ones(b, attn.num_heads, requires_grad=True) for key, attn in _attentions(trim)}
        out = trim(pairs.pixel_values, pairs.input_ids, pairs.attention_mask, mode="full", probe=probe)
        loss = F.cross_entropy(task_head(trim, task)(out.cls), pairs.labels)
        grads = torch.autograd.grad(loss, list(probe.values()))
        for key, grad in zip(probe, grads):
            totals[key] = totals.get(key, 0) + grad.abs().sum(dim=0)
    return {key: value / value.norm().clamp_min(1e-12) for key, value in totals.items()}


def _attentions(trim: SmartTrim):
    m = trim.model
    for block in [*m.visual.blocks, *m.text.blocks]:
        yield block.key, block.attn
        if block.cross_attn is not None:
            yield block.key + ".cross", block.cross_attn


def select_heads(importance: dict[str, torch.Tensor], keep: float, scope: str) -> dict[str, tuple[int, ...]]:
    """Kept head indices per module: the top ``ceil(keep·H)`` of each module (``layer``) or the top
    ``ceil(keep·total)`` of all heads of the model (``model``; a module may lose every head)."""
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r}: expected one of {SCOPES}")
    if scope == "layer":
        return {key: tuple(sorted(v.topk(math.ceil(keep * len(v))).indices.tolist())) for key, v in importance.items()}
    keys = list(importance)
    flat = torch.cat([importance[k] for k in keys])
    owner = [(k, h) for k in keys for h in range(len(importance[k]))]
    chosen = [owner[i] for i in flat.topk(math.ceil(keep * len(flat))).indices.tolist()]
    return {key: tuple(sorted(h for k, h in chosen if k == key)) for key in keys}
