"""Keep masks from trimmer scores: Gumbel-sigmoid samples in training (eq. 8), hard decisions at inference.

Masks are handled as ``log M`` so that soft masks can be added to attention logits without ``log(0)``:
``log σ(z)`` is computed as ``logsigmoid(z)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logistic_noise(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``G' − G''`` of two independent Gumbel(0, 1) variables, i.e. Logistic(0, 1) noise ``log u − log(1 − u)``."""
    u = torch.rand(shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(like.device, like.dtype)
    return u.log() - (-u).log1p()


def gumbel_sigmoid_log(scores: torch.Tensor, temperature: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``log M`` with ``M = σ((π + G' − G'') / τ)`` (eq. 8): a differentiable sample of a keep mask."""
    return F.logsigmoid((scores + logistic_noise(scores.shape, scores, generator)) / temperature)


def hard_log(scores: torch.Tensor) -> torch.Tensor:
    """``log M`` of the inference mask ``M = [π > 0]``: 0 where kept, -inf where removed."""
    return torch.zeros_like(scores).masked_fill(scores <= 0, float("-inf"))
