"""ELIP's text-token pruning ablation (ELIP section 4.3.1, Table 4): keep the first half of the text encoder and
drop ``drop_ratio`` (40 %) of each caption's tokens at the start of the second half.

Strategies, as in the paper: ``random`` (tokens drawn uniformly), ``post`` (the trailing tokens go first) and
``learned`` (tokens ranked by similarity to the paired image: ``<text_proj(h_j), image embedding>``, ELIP's
"[CLS] feature of the vision encoder guides the pruning"; it needs the image before the text, so it runs on
fusion models' ITM / VQA paths). The pooled token (BERT [CLS] / CLIP end-of-text) and the first token are never
dropped, and padding is removed with the pruned tokens (it takes no part in any output).

``apply_text_pruning(model, TextPruneConfig(...))`` installs it through ``Block.pre_hook`` of the text tower;
``apply_text_pruning(model, None)`` removes it. The kept tokens carry ``source`` (one-hot over the original
positions), by which the text embedding finds the pooled token. Inference and ITC / ITM / VQA training only:
MLM predicts every position and so cannot run on a pruned sequence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vlprune.config import ConfigError, TextConfig, check_field_types
from vlprune.method_registry import register_method
from vlprune.models.layers import Block, ForwardContext, TokenState
from vlprune.reduce.base import set_attached

STRATEGIES = ("random", "post", "learned")


@register_method("text-token", "prune caption tokens in the text tower: random, post-hoc or image-guided (learned)",
                 "ELIP / SmartTrim text-token baselines", name="text-prune")
@dataclass(frozen=True)
class TextPruneConfig:
    """``start_layer``: first text layer that sees the pruned caption (None: ``num_layers // 2``)."""

    strategy: str = "post"
    drop_ratio: float = 0.4
    start_layer: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"TextPruneConfig.strategy={self.strategy!r} is invalid: expected one of {STRATEGIES}")
        if not 0.0 <= self.drop_ratio < 1.0:
            raise ConfigError(f"TextPruneConfig.drop_ratio={self.drop_ratio!r} is invalid: expected a fraction of "
                              "tokens to drop in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return {"method": "text-prune", **asdict(self)}

    @property
    def image_guided(self) -> bool:
        """True if the ranking needs the paired image's embedding, so the image is encoded first (``learned``)."""
        return self.strategy == "learned"

    def layer(self, text: TextConfig) -> int:
        """The text layer the pruning runs before; raises if it is outside the unimodal text encoder."""
        layer = text.num_layers // 2 if self.start_layer is None else self.start_layer
        if not 1 <= layer < text.unimodal_layers:
            raise ConfigError(f"TextPruneConfig.start_layer={layer} is invalid: expected a layer in "
                              f"[1, {text.unimodal_layers}) of this text encoder's unimodal layers")
        return layer


def kept_tokens(real: torch.Tensor, drop_ratio: float, protected: int = 2) -> torch.Tensor:
    """Tokens each caption keeps: its ``real`` (non-padding) tokens minus ``floor(drop_ratio x prunable)``,
    where the ``protected`` first and pooled tokens are not prunable."""
    prunable = (real - protected).clamp(min=0)
    return real - torch.floor(drop_ratio * prunable).long()


def _scores(config: TextPruneConfig, block: Block, state: TokenState, ctx: ForwardContext, model: Any,
            generator: torch.Generator) -> torch.Tensor:
    b, n, _ = state.x.shape
    if config.strategy == "random":
        return torch.rand(b, n, generator=None if block.training else generator).to(state.x.device)
    if config.strategy == "post":
        return -torch.arange(n, dtype=state.x.dtype, device=state.x.device).expand(b, n)
    guide = ctx.image_embedding
    if guide is None:
        raise ValueError("text pruning strategy 'learned' ranks caption tokens by the paired image, so it runs only "
                         "where the image is encoded first: FusionModel.itm_logits / vqa_logits (not encode_text)")
    tokens = F.normalize(model.text_proj(block.attn_input(state.x)), dim=-1)
    return (tokens @ guide[..., None]).squeeze(-1).detach()


def prune_text(state: TokenState, scores: torch.Tensor, pooled: torch.Tensor, drop_ratio: float) -> TokenState:
    """Keep the highest-scoring ``kept_tokens`` of every caption in their original order; the first token and the
    ``pooled`` one (B,) always stay. The sequence shrinks to the batch's largest kept count; shorter rows are
    padded with masked slots."""
    b, n, _ = state.x.shape
    real = state.mask if state.mask is not None else torch.ones(b, n, dtype=torch.bool, device=state.x.device)
    scores = scores.masked_fill(~real, float("-inf"))
    rows = torch.arange(b, device=state.x.device)
    scores[:, 0] = float("inf")
    scores[rows, pooled] = float("inf")
    keep_n = kept_tokens(real.sum(dim=1), drop_ratio)
    width = int(keep_n.max())
    order = scores.topk(width, dim=1).indices
    valid = torch.arange(width, device=state.x.device)[None, :] < keep_n[:, None]
    order, position = order.sort(dim=1)
    valid = valid.gather(1, position)
    x = state.x.gather(1, order[..., None].expand(-1, -1, state.x.shape[-1]))
    source = F.one_hot(order, n).to(state.x.dtype)
    if state.source is not None:
        source = source @ state.source
    return TokenState(x=x, mask=valid, source=source)


def attach_text_pruning(model: Any, config: TextPruneConfig) -> None:
    """Install the pruning as ``Block.pre_hook`` of its text layer (raises ``ConfigError`` for a bad layer)."""
    layer = config.layer(model.config.text)
    generator = torch.Generator().manual_seed(config.seed)

    def hook(block: Block, state: TokenState, ctx: ForwardContext) -> TokenState:
        pooled = ctx.pool_index
        if pooled is None:  # BLIP's fusion pass re-runs every layer from the embeddings; BERT pools at [CLS]
            pooled = torch.zeros(state.x.shape[0], dtype=torch.long, device=state.x.device)
        return prune_text(state, _scores(config, block, state, ctx, model, generator), pooled, config.drop_ratio)

    model.text.blocks[layer].pre_hook = hook


def detach_text_pruning(model: Any) -> None:
    """Remove text-token pruning: the text tower computes exactly as the base tower again."""
    model.text.reset_hooks()
    set_attached(model, text=None, image_guided_text=False)


def apply_text_pruning(model: Any, config: TextPruneConfig | None) -> Any:
    """Turn text-token pruning on (replacing any earlier one) or off with ``None``. Returns ``model``."""
    detach_text_pruning(model)
    if config is None or config.drop_ratio == 0.0:
        return model
    attach_text_pruning(model, config)
    set_attached(model, text=config, image_guided_text=config.image_guided)
    return model


def text_schedule(config: TextPruneConfig | None, text: TextConfig, real_tokens: int) -> list[int]:
    """Tokens entering each unimodal text layer for a caption of ``real_tokens`` (no padding)."""
    if config is None or config.drop_ratio == 0.0:
        return [real_tokens] * text.unimodal_layers
    layer = config.layer(text)
    kept = int(kept_tokens(torch.tensor([real_tokens]), config.drop_ratio)[0])
    return [real_tokens] * layer + [kept] * (text.unimodal_layers - layer)
