"""torchvision.ops.misc (test-only stand-in): open_clip imports FrozenBatchNorm2d for ResNet towers only."""

from torchvision._stub import named

FrozenBatchNorm2d = named("FrozenBatchNorm2d")
