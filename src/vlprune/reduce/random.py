"""Random token dropping at EViT's schedule: the control every token method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprune.method_registry import register_method
from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState
from vlprune.reduce.base import keep_and_fuse, kept_count, register_attach, rest_weights, token_sizes
from vlprune.reduce.evit import EViTConfig


@register_method("token", "keep random image tokens at EViT's schedule (baseline)",
                 "baseline")
@dataclass(frozen=True)
class RandomConfig(EViTConfig):
    """Same layers, keep ratio and fused token as ``EViTConfig``, but the kept patches are drawn uniformly
    (at evaluation from a generator seeded with ``seed`` at ``apply``; in training from the global RNG) and the
    fused token is the size-weighted mean of the rest."""

    method = "random"
    seed: int = 0


def attach_random(model, config: RandomConfig) -> None:
    """Drop random patches after the attention of ``config.layers``, from one generator seeded here
    (``vlprune.apply``)."""
    if config.keep_ratio == 1.0:
        return
    generator = torch.Generator().manual_seed(config.seed)
    for layer in config.layers:
        model.visual.blocks[layer].mid_hook = _random_hook(config, generator)


def _random_hook(config: RandomConfig, generator: torch.Generator):
    def reduce(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
        b, n = state.x.shape[0], state.x.shape[1] - 1
        # training draws from the global RNG, which the trainer reseeds every step (exact resume)
        noise = torch.rand(b, n, generator=None if block.training else generator).to(state.x.device)
        keep = noise.topk(kept_count(config.keep_ratio, n), dim=1).indices
        weights = None
        if config.fuse:
            weights = rest_weights(token_sizes(state)[:, 1:, 0], keep)
        return keep_and_fuse(state, keep, weights)

    return reduce


register_attach(RandomConfig, attach_random)
