"""Structured pruning (MoPE-CLIP): cost tables of heads, FFN neuron groups and layers, physical removal,
distillation, and the width-then-depth / one-shot recipes. See docs/mope.md."""

from vlprune.structured.distill import DistillObjective, distil
from vlprune.structured.importance import CostTable, Module, magnitude_table, mope_table
from vlprune.structured.plan import PrunePlan, TowerPlan
from vlprune.structured.prune import apply_masks, clear_masks, masked, prune
from vlprune.structured.recipe import PruneConfig, PruneResult, run_recipe

__all__ = ["CostTable", "DistillObjective", "Module", "PruneConfig", "PrunePlan", "PruneResult", "TowerPlan",
           "apply_masks", "clear_masks", "distil", "magnitude_table", "masked", "mope_table", "prune", "run_recipe"]
