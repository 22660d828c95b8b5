"""Real checkpoints in and out: transformers ``CLIPModel`` and ``BlipForImageTextRetrieval``, open_clip CLIP.

``from_hf`` / ``from_open_clip`` build vlprune models with the same numbers; ``to_hf`` / ``to_open_clip`` write
them back (zero-padded to stock shapes when structurally pruned, see ``padding``). transformers and open_clip
are imported only inside the functions that need them.
"""

from vlprune.models.convert.hf import from_hf, to_hf
from vlprune.models.convert.mapping import ConversionError
from vlprune.models.convert.open_clip import from_open_clip, to_open_clip

__all__ = ["ConversionError", "from_hf", "from_open_clip", "to_hf", "to_open_clip"]
