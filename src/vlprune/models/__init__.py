"""vlprune's own compact model implementations (CLIP dual encoder, ALBEF/BLIP-style fusion)."""

from vlprune.models.clip import CLIP
from vlprune.models.fusion import FusionModel
from vlprune.models.layers import Attention, Block, ForwardContext, TokenState

__all__ = ["CLIP", "Attention", "Block", "ForwardContext", "FusionModel", "TokenState"]
