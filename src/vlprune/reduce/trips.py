"""TRIPS (Jiang et al., 2022): text-relevant image patch selection inside the vision encoder.

At each selection layer, after self-attention: the text [CLS] becomes a query through that layer's own W_q,
its head-averaged softmax attention over the patch keys ([CLS] excluded) ranks the patches, the top
round(r·n) stay and the rest are fused into one token weighted by that attention; then the MLP.
Default layers: the paper's stated 5th and 10th (0-indexed 4 and 9) at keep 0.7; ``placement="uniform"``
uses its spacing formula instead (s = L/(t+1), layer i·s + 1, 1-indexed: 5th and 9th for L=12, t=2).
TRIPS keeps the selection on in pre-training, fine-tuning and inference; it needs the text guide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprune.config import ConfigError, VisionConfig
from vlprune.method_registry import register_method
from vlprune.models.layers import AttentionOutput, Block, ForwardContext, TokenState, key_bias
from vlprune.reduce.base import ReduceConfig, check_layers, check_ratio, keep_and_fuse, register_attach

PLACEMENTS = ("stated", "uniform")


@register_method("token", "text-guided patch selection and fusion of image tokens",
                 "TRIPS, Jiang et al. 2022")
@dataclass(frozen=True)
class TRIPSConfig(ReduceConfig):
    method = "trips"
    layers: tuple[int, ...] | None = None  # None: from ``placement`` and ``num_layers_selected``
    keep_ratio: float = 0.7
    placement: str = "stated"
    num_layers_selected: int = 2

    @property
    def text_guided(self) -> bool:
        return True

    def selection_layers(self, vision: VisionConfig) -> tuple[int, ...]:
        if self.layers is not None:
            return tuple(self.layers)
        if self.placement == "stated":
            return (4, 9) if vision.num_layers == 12 and self.num_layers_selected == 2 else self._uniform(vision)
        return self._uniform(vision)

    def _uniform(self, vision: VisionConfig) -> tuple[int, ...]:
        spacing = vision.num_layers // (self.num_layers_selected + 1)
        return tuple(i * spacing for i in range(1, self.num_layers_selected + 1))  # 0-indexed i·s (1-indexed i·s+1)

    def check(self, vision: VisionConfig) -> None:
        check_ratio("TRIPSConfig", "keep_ratio", self.keep_ratio)
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"TRIPSConfig.placement={self.placement!r} is invalid: expected one of {PLACEMENTS}")
        if self.layers is None and not 1 <= self.num_layers_selected < vision.num_layers:
            raise ConfigError(f"TRIPSConfig.num_layers_selected={self.num_layers_selected!r} is invalid: expected "
                              f"1 to {vision.num_layers - 1}")
        check_layers("TRIPSConfig", "layers", self.selection_layers(vision), vision.num_layers)

    def kept(self, patches: int) -> int:
        return max(1, round(self.keep_ratio * patches))

    def schedule(self, vision: VisionConfig) -> list[tuple[int, int]]:
        n, out, layers = vision.num_patches + 1, [], self.selection_layers(vision)
        for layer in range(vision.num_layers):
            after = n
            if layer in layers and self.keep_ratio < 1.0:
                k = self.kept(n - 1)
                after = 1 + k + int(k < n - 1)
            out.append((n, after))
            n = after
        return out

    def extra_macs(self, vision: VisionConfig) -> int:
        """The text query's projection and its attention logits at each selection layer."""
        schedule = self.schedule(vision)
        return sum(vision.width * vision.num_heads[layer] * vision.head_dim +
                   vision.num_heads[layer] * schedule[layer][0] * vision.head_dim
                   for layer in self.selection_layers(vision) if self.keep_ratio < 1.0)


def attach_trips(model, config: TRIPSConfig) -> None:
    """Select patches with the text guide after the attention of each selection layer (``vlprune.apply``)."""
    if config.keep_ratio == 1.0:
        return
    hook = _trips_hook(config)
    for layer in config.selection_layers(model.config.vision):
        block = model.visual.blocks[layer]
        block.wants_keys = True
        block.mid_hook = hook


def _trips_hook(config: TRIPSConfig):
    def select(block: Block, state: TokenState, attn: AttentionOutput, ctx: ForwardContext) -> TokenState:
        text_cls = ctx.guide
        if text_cls is None:
            raise ValueError("TRIPS selects patches with the text [CLS]: pass guide=model.text_guide(ids, mask) "
                             "to encode_image (fusion models' itm/vqa calls do this themselves)")
        with torch.no_grad():
            patch_keys = attn.keys[:, :, 1:]
            mask = state.mask[:, 1:] if state.mask is not None else None
            scores = block.attn.query_attention(block.attn_input(text_cls.to(state.x.dtype)), patch_keys,
                                                key_bias(mask, None, state.x.dtype)).mean(dim=1)
            keep = scores.topk(config.kept(scores.shape[1]), dim=1).indices
        return keep_and_fuse(state, keep, scores)

    return select


register_attach(TRIPSConfig, attach_trips)
