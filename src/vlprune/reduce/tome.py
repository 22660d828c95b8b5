"""ToMe (Bolya et al., 2023): in every layer, after attention and before the MLP, merge the ``r`` most
similar token pairs found by bipartite soft matching on the keys (mean over heads, cosine similarity);
merged tokens are size-weighted averages and attention becomes proportional (+log size on the keys)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprune.config import ConfigError, VisionConfig
from vlprune.method_registry import register_method
from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState
from vlprune.reduce.base import ReduceConfig, register_attach, token_sizes


def bipartite_merge(state: TokenState, keys: torch.Tensor, r: int) -> TokenState:
    """Split tokens alternately into sets A (even) and B (odd); each A token proposes its most similar B
    token; the ``r`` strongest proposals merge A into B (size-weighted). [CLS] (A's first) never merges.
    Output order: unmerged A tokens in their original order ([CLS] first), then B."""
    if r <= 0:
        return state
    metric = F.normalize(keys, dim=-1)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(1, 2)
    scores[:, 0, :] = float("-inf")  # protect [CLS]
    best, best_dst = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged_src, unmerged = order[:, :r], order[:, r:].sort(dim=-1).values
    dst = best_dst.gather(1, merged_src)
    size = token_sizes(state)

    def merge(t: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        t = t * weight if weight is not None else t
        src, dst_t = t[:, ::2], t[:, 1::2]
        channels = t.shape[-1]
        kept = src.gather(1, unmerged[..., None].expand(-1, -1, channels))
        moved = src.gather(1, merged_src[..., None].expand(-1, -1, channels))
        dst_t = dst_t.scatter_reduce(1, dst[..., None].expand(-1, -1, channels), moved, reduce="sum")
        return torch.cat([kept, dst_t], dim=1)

    new_size = merge(size, None)
    x = merge(state.x, size) / new_size
    source = merge(state.source, None) if state.source is not None else None
    return TokenState(x=x, size=new_size, source=source, mask=None)


@register_method("token", "merge r similar image tokens per layer by bipartite matching",
                 "ToMe, Bolya et al. 2023")
@dataclass(frozen=True)
class ToMeConfig(ReduceConfig):
    """``r`` tokens merged per layer: one int for every layer, or a per-layer list; ``None`` (the default) scales
    it to the tower, ``floor(patches / 2 / layers)`` (about half the patch tokens merged by the last layer: r=8 on
    ViT-B/16, ToMe's own setting; r=2 on the 64-patch toy models); ``proportional_attn`` adds log(size) to
    attention logits, as ToMe does."""

    method = "tome"
    r: int | tuple[int, ...] | None = None
    proportional_attn: bool = True

    def per_layer(self, vision: VisionConfig) -> tuple[int, ...]:
        """``r`` of every layer of ``vision``."""
        if self.r is None:
            return (vision.num_patches // 2 // max(vision.num_layers, 1),) * vision.num_layers
        return (self.r,) * vision.num_layers if isinstance(self.r, int) else tuple(self.r)

    def check(self, vision: VisionConfig) -> None:
        rs = self.per_layer(vision)
        if len(rs) != vision.num_layers or not all(isinstance(v, int) and v >= 0 for v in rs):
            raise ConfigError(f"ToMeConfig.r={self.r!r} is invalid: expected an int >= 0 or one per layer "
                              f"({vision.num_layers} layers)")
        n = vision.num_patches + 1
        for layer, r in enumerate(rs):
            if r > (n - 1) // 2:
                raise ConfigError(f"ToMeConfig.r={self.r!r} is too large: layer {layer} has {n} tokens and can "
                                  f"merge at most {(n - 1) // 2} (half of the non-[CLS] tokens)")
            n -= r

    def schedule(self, vision: VisionConfig) -> list[tuple[int, int]]:
        n, out = vision.num_patches + 1, []
        for r in self.per_layer(vision):
            out.append((n, n - r))
            n -= r
        return out


def attach_tome(model, config: ToMeConfig) -> None:
    """Merge ``r`` tokens after the attention of every layer with ``r > 0`` (``vlprune.apply``)."""
    model.visual.proportional_attn = config.proportional_attn
    for block, r in zip(model.visual.blocks, config.per_layer(model.config.vision)):
        if r > 0:
            block.wants_keys = True
            block.mid_hook = _merge_hook(r)


register_attach(ToMeConfig, attach_tome)


def _merge_hook(r: int):
    def merge(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
        return bipartite_merge(state, attn.keys.mean(dim=1), r)

    return merge
