"""CLIP-style dual encoder trained with the image-text contrastive (ITC) loss."""

from __future__ import annotations

from vlprune.config import ModelConfig
from vlprune.models.common import DualTowerModel


class CLIP(DualTowerModel):
    def __init__(self, config: ModelConfig):
        if config.kind != "clip":
            raise ValueError(f"CLIP needs a config with kind='clip', got kind={config.kind!r}")
        super().__init__(config)
        self._init()
