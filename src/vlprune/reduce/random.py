"""Random token dropping at EViT's schedule: the control every token method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState
from vlprune.reduce.base import keep_and_fuse, kept_count, register_method, rest_weights, token_sizes
from vlprune.reduce.evit import EViTConfig


@register_method
@dataclass(frozen=True)
class RandomConfig(EViTConfig):
    """Same layers, keep ratio and fused token as ``EViTConfig``, but the kept patches are drawn uniformly
    (at evaluation from a generator seeded with ``seed`` at ``apply``; in training from the global RNG) and the
    fused token is the size-weighted mean of the rest."""

    method = "random"
    seed: int = 0

    def attach(self, model) -> None:
        if self.keep_ratio == 1.0:
            return
        generator = torch.Generator().manual_seed(self.seed)
        for layer in self.layers:
            model.visual.blocks[layer].mid_hook = self._hook(generator)

    def _hook(self, generator: torch.Generator):
        def reduce(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
            b, n = state.x.shape[0], state.x.shape[1] - 1
            # training draws from the global RNG, which the trainer reseeds every step (exact resume)
            noise = torch.rand(b, n, generator=None if block.training else generator).to(state.x.device)
            keep = noise.topk(kept_count(self.keep_ratio, n), dim=1).indices
            weights = None
            if self.fuse:
                weights = rest_weights(token_sizes(state)[:, 1:, 0], keep)
            return keep_and_fuse(state, keep, weights)

        return reduce
