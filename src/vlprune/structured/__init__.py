"""Structured pruning (MoPE-CLIP): cost tables of heads, FFN neuron groups and layers, physical removal, the
distillation objective and the recipe config; ``vlprune.train.distill`` and ``vlprune.train.prune_recipe`` run
them. See docs/mope.md."""

from vlprune.structured.config import PruneConfig
from vlprune.structured.distill import DistillObjective
from vlprune.structured.importance import CostTable, Module, magnitude_table, mope_table
from vlprune.structured.plan import PrunePlan, TowerPlan
from vlprune.structured.prune import apply_masks, clear_masks, masked, prune

__all__ = ["CostTable", "DistillObjective", "Module", "PruneConfig", "PrunePlan", "TowerPlan", "apply_masks",
           "clear_masks", "magnitude_table", "masked", "mope_table", "prune"]
