"""The trimmers: a token trimmer (local MLP score + cross-modal global bilinear score, eqs. 3-6) and a head
trimmer (eq. 7) per attention module. Stable initialisation: the output layers start at zero weights and bias
``init_logit`` > 0, so every token and head starts kept."""

from __future__ import annotations

import torch
from torch import nn


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _start_kept(layer: nn.Linear, init_logit: float) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, init_logit)


class TokenTrimmer(nn.Module):
    """Scores π (B, N) of the tokens ``h`` (B, N, D) of one layer.

    ``H' = Linear(H)``; local ``π_l = MLP(H')`` (eq. 3); global ``g = MLP([c_s, c_c])`` (eq. 4) from this
    modality's [CLS] ``c_s`` and the other modality's ``c_c``, ``π_g = g W H'ᵀ`` (eq. 5); ``π = π_l + π_g``.
    ``use_global=False`` is the Local baseline.
    """

    def __init__(self, dim: int, other_dim: int, hidden: int, init_logit: float, use_global: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.local = _mlp(hidden, hidden, 1)
        _start_kept(self.local[-1], init_logit)
        self.use_global = use_global
        if use_global:
            self.fuse = _mlp(dim + other_dim, hidden, hidden)
            self.bilinear = nn.Linear(hidden, hidden, bias=False)
            nn.init.zeros_(self.bilinear.weight)

    def forward(self, h: torch.Tensor, own_cls: torch.Tensor, other_cls: torch.Tensor) -> torch.Tensor:
        hp = self.proj(h)
        scores = self.local(hp).squeeze(-1)
        if self.use_global:
            g = self.fuse(torch.cat([own_cls, other_cls], dim=-1))
            scores = scores + (self.bilinear(g)[:, None, :] * hp).sum(-1)
        return scores

    def macs(self, tokens: int) -> int:
        """Multiply-accumulates for ``tokens`` tokens of one input."""
        hidden, dim = self.proj.out_features, self.proj.in_features
        per_token = dim * hidden + hidden * hidden + hidden
        if not self.use_global:
            return tokens * per_token
        fuse_in = self.fuse[0].in_features
        return tokens * (per_token + hidden) + fuse_in * hidden + 2 * hidden * hidden


class HeadTrimmer(nn.Module):
    """Scores π_h (B, H) of the heads of one attention module from [CLS] features (eq. 7): the own [CLS] for
    self-attention, ``[c_s, c_c]`` for cross-attention."""

    def __init__(self, d_in: int, heads: int, hidden: int, init_logit: float):
        super().__init__()
        self.net = _mlp(d_in, hidden, heads)
        _start_kept(self.net[-1], init_logit)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)

    def macs(self) -> int:
        first, last = self.net[0], self.net[-1]
        return first.in_features * first.out_features + last.in_features * last.out_features
