"""``PruneConfig``: one structured-pruning run (method, data, stage, towers, budget, distillation), validated on
construction and registered by name for every ranking method; ``vlprune.train.prune_recipe.run_recipe`` runs it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from vlprune.config import ConfigError, check_field_types, reject_unknown_fields, requirer
from vlprune.data.sources import parse_data
from vlprune.method_registry import register_method
from vlprune.structured.distill import DEFAULT_WEIGHTS
from vlprune.structured.importance import METHODS, METRICS
from vlprune.structured.plan import TOWERS

STAGES = ("finetune", "pretrain")
TOWER_CHOICES = ("vision", "text", "both")

_check = requirer("PruneConfig")


@register_method("structured", "rank heads, FFN neuron groups and layers by module-wise pruning error, prune "
                 "width then depth, distil", "MoPE-CLIP, Lin et al. 2024", name="mope", method="mope")
@register_method("structured", "rank modules by weight magnitude, then the same pruning and distillation", "baseline",
                 name="magnitude", method="magnitude")
@register_method("structured", "rank modules by first-order Taylor (gradient x weight) importance",
                 "baseline (Molchanov et al.)", name="taylor", method="taylor")
@register_method("structured", "rank modules at random", "baseline",
                 name="random", method="random")
@register_method("structured", "drop every other layer (depth only)", "baseline",
                 name="every-other-layer", method="every-other-layer")
@dataclass(frozen=True)
class PruneConfig:
    """One pruning run. ``target_params``: fraction of each pruned tower's parameters to keep.
    ``keep_layers``: fraction of layers the depth step keeps (None: 1.0 for targets >= 0.5, else 0.75, as the
    paper's 18 of 24 layers); width pruning aims at ``target / keep_layers`` of the prunable block params."""

    method: str = "mope"
    data: str = "toyworld:train"        # pairs for gradient scores, rewiring and distillation
    val_data: str = "toyworld:val"      # retrieval set for MoPE's Z
    stage: str = "finetune"
    tower: str = "vision"
    target_params: float = 0.5
    keep_layers: float | None = None
    groups: int = 8
    metric: str = "mean_recall"
    val_pairs: int = 200
    grad_pairs: int = 128
    batch_size: int = 100
    distill_steps: int = 100
    distill_batch: int = 32
    lr: float = 1e-4
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS
    fast: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        _check(self.method in METHODS, "method", self.method, f"one of {METHODS}")
        for name in ("data", "val_data"):
            try:
                parse_data(getattr(self, name))
            except ValueError as err:
                raise ConfigError(f"PruneConfig.{name}={getattr(self, name)!r} is invalid: {err}") from None
        _check(self.stage in STAGES, "stage", self.stage, f"one of {STAGES}")
        _check(self.tower in TOWER_CHOICES, "tower", self.tower, f"one of {TOWER_CHOICES}")
        _check(isinstance(self.target_params, (int, float)) and 0 < self.target_params <= 1, "target_params",
               self.target_params, "a fraction in (0, 1]; 0 would prune everything")
        _check(self.keep_layers is None or 0 < self.keep_layers <= 1, "keep_layers", self.keep_layers,
               "None or a fraction in (0, 1]")
        _check(self.metric in METRICS, "metric", self.metric, f"one of {METRICS}")
        for name in ("groups", "val_pairs", "grad_pairs", "batch_size", "distill_batch"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, getattr(self, name),
                   "an int >= 1")
        _check(isinstance(self.distill_steps, int) and self.distill_steps >= 0, "distill_steps", self.distill_steps,
               "an int >= 0 (0: no distillation)")
        _check(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a number > 0")
        _check(len(self.weights) == 3 and all(w >= 0 for w in self.weights), "weights", self.weights,
               "(alpha, beta, gamma) >= 0")

    @property
    def towers(self) -> tuple[str, ...]:
        return TOWERS if self.tower == "both" else (self.tower,)

    @property
    def layer_fraction(self) -> float:
        if self.keep_layers is not None:
            return self.keep_layers
        return 1.0 if self.target_params >= 0.5 else 0.75

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """From flags and ``--set`` values; an unknown key is one ``ConfigError`` listing the known ones."""
        reject_unknown_fields(cls, data)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
