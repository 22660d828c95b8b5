"""TEST-ONLY STAND-IN for torchvision, which has no wheel beside this CPU torch.

open_clip imports a few torchvision names at import time (image transforms, ``FrozenBatchNorm2d``) but the
parity tests never call them: they build models with ``open_clip.create_model`` and compare against vlprune's
own PIL + numpy preprocessing. Every name here exists so the import succeeds; using any of them raises.
``tests/helpers/open_clip_env.py`` puts this on ``sys.path`` only when the real torchvision is missing.
"""

__version__ = "0.0.0+vlprune-test-stand-in"
