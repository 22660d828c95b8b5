"""Methods at a matched budget: solve each method's one knob so its analytic image-tower GFLOPs (extra passes
included) come closest to ``(1 - cut) x`` the base model's. Comparisons between methods are only fair at
equal cost; every result still records the GFLOPs actually reached, since knobs are discrete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from vlprune.config import ConfigError, ModelConfig
from vlprune.method_registry import method_config
from vlprune.reduce.base import ReduceConfig, method_gflops
from vlprune.reduce.elip import ELIPConfig
from vlprune.reduce.tome import ToMeConfig


def _elip_keep(base: ELIPConfig, strength: float) -> dict[str, Any]:
    """Scale how much each stage drops: keep_i = 1 - s (1 - default keep_i); s = 1 is the paper's schedule."""
    return {"keep": tuple(round(1.0 - strength * (1.0 - k), 4) for k in base.keep)}


def _candidates(name: str, base: ReduceConfig, config: ModelConfig) -> list[ReduceConfig]:
    """Every setting of the method's knob worth trying, from mild to strong."""
    if isinstance(base, ToMeConfig):
        layers = config.vision.num_layers  # r+1 in the first j layers, r after: a finer grid than one r for all
        return [replace(base, r=(r + 1,) * j + (r,) * (layers - j) if j else r)
                for r in range(0, config.vision.num_patches // 2 + 1) for j in range(layers)]  # too large: fails
    if isinstance(base, ELIPConfig):
        strongest = 0.999 / (1.0 - min(base.keep)) if min(base.keep) < 1.0 else 1.0
        return [replace(base, **_elip_keep(base, s)) for s in np.linspace(0.0, strongest, 400)]
    if hasattr(base, "keep_ratio"):
        return [replace(base, keep_ratio=float(t)) for t in np.linspace(1.0, 0.02, 491)]
    raise ConfigError(f"method {name!r} has no keep-ratio knob to match a budget with")


def vision_gflops_of(method: ReduceConfig | None, config: ModelConfig) -> float:
    """Analytic image-tower GFLOPs per image of ``config`` with ``method`` (``None``: the base model)."""
    if method is not None:
        method.check(config.vision)
    return method_gflops(config, method)["vision_gflops"]


def at_budget(name: str, config: ModelConfig, cut: float, **fixed: Any) -> ReduceConfig:
    """The setting of method ``name`` (other fields from ``fixed``) whose vision GFLOPs are closest to
    ``(1 - cut)`` of the base model's; ties go to the milder setting."""
    if not 0.0 <= cut < 1.0:
        raise ConfigError(f"cut={cut!r} is invalid: expected the fraction of vision GFLOPs to remove, in [0, 1)")
    target = (1.0 - cut) * vision_gflops_of(None, config)
    best, best_gap = None, float("inf")
    for candidate in _candidates(name, method_config(name, **fixed), config):
        try:
            gap = abs(vision_gflops_of(candidate, config) - target)
        except ConfigError:
            continue
        if gap < best_gap - 1e-12:
            best, best_gap = candidate, gap
    assert best is not None  # the mildest candidate (keep 1.0 / r 0) always fits
    return best


MATCHABLE: dict[str, Callable[[ReduceConfig], str]] = {
    "elip": lambda c: "keep=" + "/".join(f"{k:g}" for k in c.keep),
    "trips": lambda c: f"keep_ratio={c.keep_ratio:.3g}",
    "evit": lambda c: f"keep_ratio={c.keep_ratio:.3g}",
    "random": lambda c: f"keep_ratio={c.keep_ratio:.3g}",
    "tome": lambda c: f"r={c.r}" if isinstance(c.r, int) or c.r is None else "r=" + "/".join(map(str, c.r)),
}
"""Methods ``at_budget`` can match, with how to print the knob it chose."""


VARIANTS: dict[str, Callable[[ModelConfig, float], ReduceConfig]] = {
    "ELIP λ=0.8 (text-guided)": lambda cfg, cut: at_budget("elip", cfg, cut, mode="cheap", lam=0.8),
    "ELIP λ=1 (vision only)": lambda cfg, cut: at_budget("elip", cfg, cut, mode="cheap", lam=1.0),
    "TRIPS (text-guided)": lambda cfg, cut: at_budget("trips", cfg, cut),
    "EViT": lambda cfg, cut: at_budget("evit", cfg, cut),
    "ToMe": lambda cfg, cut: at_budget("tome", cfg, cut),
    "random": lambda cfg, cut: at_budget("random", cfg, cut),
}
"""The inference comparison set, each solved to a cut. ELIP in its cheap mode: the faithful mode runs every
stage twice and costs more than the base model at inference (it is a pre-training method); λ=1 is ELIP without
the text."""
