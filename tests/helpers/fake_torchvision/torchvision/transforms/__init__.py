"""Names open_clip.transform imports from torchvision.transforms (test-only stand-in; unusable)."""

from enum import Enum

from torchvision._stub import named


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


Normalize, Compose, RandomResizedCrop, ToTensor, Resize, CenterCrop, ColorJitter, Grayscale = (
    named(n) for n in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop",
                       "ColorJitter", "Grayscale"))
