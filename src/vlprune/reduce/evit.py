"""EViT (Liang et al., 2022): at chosen layers, after attention, keep the patches the [CLS] token attends to
most (head-averaged) and fuse the rest into one token weighted by that attention."""

from __future__ import annotations

from dataclasses import dataclass

from vlprune.config import VisionConfig
from vlprune.method_registry import register_method
from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState
from vlprune.reduce.base import (
    ReduceConfig,
    check_layers,
    check_ratio,
    keep_and_fuse,
    kept_count,
    register_attach,
    rest_weights,
)


@register_method("token", "keep the image tokens [CLS] attends to most, fuse the rest (EViT)",
                 "EViT, Liang et al. 2022")
@dataclass(frozen=True)
class EViTConfig(ReduceConfig):
    """``layers`` (0-indexed) prune at ``keep_ratio`` of the current non-[CLS] tokens; ``fuse`` adds the
    attention-weighted fused token; ``renormalize`` rescales the fused weights to sum 1 (ELIP does, EViT not)."""

    method = "evit"
    layers: tuple[int, ...] = (3, 6, 9)
    keep_ratio: float = 0.7
    fuse: bool = True
    renormalize: bool = False

    def check(self, vision: VisionConfig) -> None:
        check_ratio("EViTConfig", "keep_ratio", self.keep_ratio)
        check_layers("EViTConfig", "layers", tuple(self.layers), vision.num_layers)

    def schedule(self, vision: VisionConfig) -> list[tuple[int, int]]:
        n, out = vision.num_patches + 1, []
        for layer in range(vision.num_layers):
            kept = kept_count(self.keep_ratio, n - 1)
            after = 1 + kept + int(self.fuse and kept < n - 1) if layer in self.layers else n
            out.append((n, after))
            n = after
        return out


def attach_evit(model, config: EViTConfig) -> None:
    """Prune and fuse after the attention of ``config.layers`` (``vlprune.apply``)."""
    if config.keep_ratio == 1.0:
        return  # keeps everything: exactly the base model
    hook = _evit_hook(config)
    for layer in config.layers:
        block = model.visual.blocks[layer]
        block.wants_cls_attn = True
        block.mid_hook = hook


def _evit_hook(config: EViTConfig):
    def reduce(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
        scores = attn.cls_attn.mean(dim=1)[:, 1:]  # (B, N-1): head-averaged [CLS] attention over patches
        keep = scores.topk(kept_count(config.keep_ratio, scores.shape[1]), dim=1).indices
        weights = None
        if config.fuse:
            weights = scores
            if config.renormalize:
                weights = rest_weights(scores, keep)
        return keep_and_fuse(state, keep, weights)

    return reduce


register_attach(EViTConfig, attach_evit)
