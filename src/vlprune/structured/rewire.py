"""Gradient-based importance of heads and FFN neurons, and DynaBERT's neuron rewiring.

Every head output and FFN activation of a tower is multiplied by a mask ``m = 1`` (``StructureMask``); the
first-order (Taylor) estimate of the ITC loss change when a unit is removed is ``|∂L/∂m|`` (Michel et al.
2019; DynaBERT, Hou et al. 2020, eq. 3), accumulated as ``Σ_batches |∂L/∂m|``. Rewiring sorts each layer's
neurons by this score (a permutation of ``fc1`` rows and ``fc2`` columns: the function is unchanged), so
that MoPE's contiguous neuron groups gather neurons of similar importance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprune.models.contrastive import itc_loss
from vlprune.models.io import Model
from vlprune.models.layers import StructureMask
from vlprune.structured.prune import blocks, clear_masks
from vlprune.structured.towers import Batch, encode


@dataclass
class TaylorScores:
    """``heads[l]`` (H_l,) and ``neurons[l]`` (I_l,): accumulated ``|∂L_itc/∂m|`` per unit of layer l."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]


def taylor_importance(model: Model, tower: str, batches: list[Batch]) -> TaylorScores:
    """Taylor scores of every head and neuron of ``tower`` over ``batches`` (the model's weights get no grad)."""
    if not batches:
        raise ValueError("taylor_importance needs at least one batch of image-text pairs")
    like = next(model.parameters())
    masks = [StructureMask(heads=torch.ones(b.attn.num_heads, dtype=like.dtype, device=like.device,
                                            requires_grad=True),
                           neurons=torch.ones(b.mlp.hidden, dtype=like.dtype, device=like.device, requires_grad=True))
             for b in blocks(model, tower)]
    scores = TaylorScores([torch.zeros_like(m.heads) for m in masks], [torch.zeros_like(m.neurons) for m in masks])
    for block, mask in zip(blocks(model, tower), masks):
        block.structure = mask
    try:
        for batch in batches:
            loss = itc_loss(encode(model, "vision", [batch]), encode(model, "text", [batch]), model.logit_scale)
            inputs = [t for m in masks for t in (m.heads, m.neurons)]
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
            for i in range(len(masks)):
                for target, grad in ((scores.heads[i], grads[2 * i]), (scores.neurons[i], grads[2 * i + 1])):
                    if grad is not None:
                        target += grad.detach().abs()
    finally:
        clear_masks(model)
    return scores


@torch.no_grad()
def rewire(model: Model, tower: str, neuron_scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Reorder each layer's FFN neurons by decreasing score, in place; returns each layer's permutation
    (new position -> old neuron index). The model computes exactly the same function afterwards."""
    orders = []
    for block, score in zip(blocks(model, tower), neuron_scores):
        order = torch.argsort(score, descending=True, stable=True).to(block.mlp.fc1.weight.device)
        block.mlp.fc1.weight.copy_(block.mlp.fc1.weight[order])
        block.mlp.fc1.bias.copy_(block.mlp.fc1.bias[order])
        block.mlp.fc2.weight.copy_(block.mlp.fc2.weight[:, order])
        orders.append(order.cpu())
    return orders
