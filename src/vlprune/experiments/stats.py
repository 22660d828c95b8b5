"""Deciding "A vs B" by statistics: a paired bootstrap of the difference on the same items, the spread over
training seeds, and one verdict rule (docs/experiments.md).

A comparison is paired: ``a[i]`` and ``b[i]`` score the same item (a query's hit@1, a question's correctness).
The bootstrap resamples items with replacement, the same indices for both sides, so what both get right or
wrong together cancels and the interval is that of the difference, not of either score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_RESAMPLES = 1000
VERDICTS = ("reproduced", "refuted", "inconclusive", "not measured")


@dataclass(frozen=True)
class PairedInterval:
    """mean(a) - mean(b) over ``items`` paired items, with its bootstrap interval at ``confidence``."""

    difference: float
    ci_low: float
    ci_high: float
    items: int
    resamples: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> PairedInterval:
    """Percentile bootstrap of mean(a - b): ``resamples`` (>= 1,000) draws of the items with replacement, seeded,
    the same draw for both sides."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must be two 1-D arrays of one length (one score per item, same items), got "
                         f"shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 items, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores must be finite")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples={resamples}: use at least {MIN_RESAMPLES} for a 95% interval")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: expected a number in (0, 1)")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # chunks bound the (chunk, items) index matrix
        stop = min(resamples, start + 256)
        means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedInterval(float(diff.mean()), float(low), float(high), len(diff), resamples, confidence)


def bootstrap_mean_interval(scores: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0,
                            confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(scores), one score per item: ``paired_bootstrap`` against zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    interval = paired_bootstrap(scores, np.zeros_like(scores), resamples, seed, confidence)
    return interval.ci_low, interval.ci_high


def seed_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of one number over training seeds; sd is 0 for a single seed."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no seeds to summarise")
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def verdict(ci_low: float, ci_high: float, tolerance: tuple[float, float]) -> str:
    """The verdict rule: a paper's claim is a tolerance band ``(low, high)`` on the difference (e.g. "no loss":
    (-0.01, inf); "within 2 points": (-0.02, 0.02)). ``reproduced`` when the whole interval lies inside the band,
    ``refuted`` when it lies wholly outside, ``inconclusive`` otherwise (the interval straddles an edge)."""
    low, high = tolerance
    if not (low <= high and ci_low <= ci_high):
        raise ValueError(f"verdict: need ordered bounds, got interval ({ci_low}, {ci_high}) and band {tolerance}")
    if low <= ci_low and ci_high <= high:
        return "reproduced"
    if ci_high < low or ci_low > high:
        return "refuted"
    return "inconclusive"
