"""CLIP-style dual encoder trained with the image-text contrastive (ITC) loss."""

from __future__ import annotations

import torch

from vlprune.config import ModelConfig
from vlprune.models.common import DualTowerModel
from vlprune.models.layers import TokenState


class CLIP(DualTowerModel):
    def __init__(self, config: ModelConfig):
        if config.kind != "clip":
            raise ValueError(f"CLIP needs a config with kind='clip', got kind={config.kind!r}")
        super().__init__(config)
        self._init()

    def text_guide(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ELIP's CLIP guide (official open_clip fork): the L2-normalised text embedding mapped into the vision
        width with the transpose of the vision projection, without gradient. (B, vision width)."""
        return self.guide_from_text(self.text(input_ids, attention_mask), input_ids, attention_mask)

    def guide_from_text(self, state: TokenState, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``text_guide`` from an already computed text tower pass."""
        with torch.no_grad():
            return self.text_embedding(state, input_ids, attention_mask, normalize=True) @ self.visual_proj.weight
