"""What every vlprune model shares: config, weight init, parameter counts, projections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprune.config import ModelConfig
from vlprune.models.layers import AttachedMethods, TokenState
from vlprune.models.text import TextTransformer
from vlprune.models.vision import VisionTransformer


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def pool_image(state: TokenState, pool: str) -> torch.Tensor:
    """(B, D) image feature: the [CLS] token (``"cls"``) or the mean of the patch tokens (``"mean"``), weighted by
    ``size`` (a merged token counts for the patches it covers), ``mask`` (pruned keys count 0) and ``log_keep``
    (a soft keep mask counts exp(log_keep))."""
    if pool == "cls":
        return state.x[:, 0]
    weight = torch.ones_like(state.x[:, 1:, :1]) if state.size is None else state.size[:, 1:].to(state.x.dtype)
    if state.mask is not None:
        weight = weight * state.mask[:, 1:, None].to(weight.dtype)
    if state.log_keep is not None:
        weight = weight * state.log_keep[:, 1:, None].exp()
    return (state.x[:, 1:] * weight).sum(1) / weight.sum(1)


class DualTowerModel(nn.Module):
    """Vision tower + text tower + projections into a shared embedding space with a learnable temperature."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.vision)
        self.text = TextTransformer(config.text)
        self.visual_proj = nn.Linear(config.vision.width, config.embed_dim, bias=config.proj_bias)
        self.text_proj = nn.Linear(config.text.width, config.embed_dim, bias=config.proj_bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.attached: AttachedMethods | None = None  # what ``vlprune.apply`` / ``apply_text_pruning`` installed

    @property
    def reduction(self):
        """The image-token method's config ``vlprune.apply`` installed, or None (read-only)."""
        return None if self.attached is None else self.attached.image

    @property
    def text_reduction(self):
        """The text-token pruning config ``apply_text_pruning`` installed, or None (read-only)."""
        return None if self.attached is None else self.attached.text

    def _init(self) -> None:
        for module in self.modules():
            init_weights(module)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False,
                     guide: torch.Tensor | None = None) -> torch.Tensor:
        """Projected image embedding from the final [CLS] token (or the patch tokens' mean: ``VisionConfig.pool``);
        ``guide`` (from ``text_guide``) steers text-guided token reduction when one is applied."""
        return self.image_embedding(self.visual(pixel_values, guide=guide), normalize)

    def image_embedding(self, state: TokenState, normalize: bool = False) -> torch.Tensor:
        """Project the pooled token of a finished image tower pass (``VisionConfig.pool``)."""
        emb = self.visual_proj(pool_image(state, self.config.vision.pool))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    normalize: bool = False) -> torch.Tensor:
        """Projected text embedding from the pooled token ([CLS] or end-of-text)."""
        return self.text_embedding(self.text(input_ids, attention_mask), input_ids, attention_mask, normalize)

    def text_embedding(self, state: TokenState, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       normalize: bool = False) -> torch.Tensor:
        """Project the pooled token ([CLS] or end-of-text) of a finished text tower pass (found through
        ``state.source`` when text tokens were pruned)."""
        idx = self.text.pool_index(input_ids, attention_mask)
        if state.source is not None:
            idx = state.source[torch.arange(len(idx), device=idx.device), :, idx].argmax(dim=1)
        emb = self.text_proj(state.x[torch.arange(len(idx), device=idx.device), idx])
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings and the logit scale exp(s) (open_clip's convention)."""
        return (self.encode_image(pixel_values, normalize=True),
                self.encode_text(input_ids, attention_mask, normalize=True), self.logit_scale.exp())

    def num_params(self, part: str = "all") -> int:
        """Parameter count of ``'all'``, ``'vision'`` (tower + projection) or ``'text'``."""
        modules = {"all": [self], "vision": [self.visual, self.visual_proj], "text": [self.text, self.text_proj]}
        if part not in modules:
            raise ValueError(f"part={part!r}: expected one of {sorted(modules)}")
        return sum(p.numel() for m in modules[part] for p in m.parameters())
