"""Experiments that decide claims: paired statistics and the verdict rule (``stats``)."""

from vlprune.experiments.stats import PairedInterval, paired_bootstrap, seed_spread, verdict

__all__ = ["PairedInterval", "paired_bootstrap", "seed_spread", "verdict"]
