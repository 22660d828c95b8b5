"""What structured pruning removes: per tower, attention heads and FFN neurons of each layer, and whole layers.

A ``PrunePlan`` is plain data (JSON round trip), checked against the model it is applied to, so the soft (masked)
and the physical pruning in ``prune.py`` read the same description.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vlprune.config import ModelConfig, TowerConfig

TOWERS = ("vision", "text")


def tower_config(config: ModelConfig, tower: str) -> TowerConfig:
    """The vision or text config of a model; any other name is an error naming the choices."""
    if tower not in TOWERS:
        raise ValueError(f"tower={tower!r}: expected one of {TOWERS}")
    return config.vision if tower == "vision" else config.text


def _sorted_unique(owner: str, values: Iterable[int], limit: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(set(values)) != len(values) or any(not 0 <= v < limit for v in values):
        raise ValueError(f"{owner}={list(values)}: expected distinct indices in [0, {limit})")
    return tuple(sorted(values))


@dataclass(frozen=True)
class TowerPlan:
    """Removals in one tower. ``heads[layer]`` / ``neurons[layer]`` list removed head / FFN-neuron indices of that
    layer (layers not named lose nothing); ``layers`` lists dropped layers. Indices are positions in the model the
    plan is applied to."""

    heads: dict[int, tuple[int, ...]] = field(default_factory=dict)
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)
    layers: tuple[int, ...] = ()

    def validate(self, cfg: TowerConfig, tower: str) -> TowerPlan:
        """A normalised copy (sorted indices, no empty entries); raises ``ValueError`` naming a bad index."""
        layers = _sorted_unique(f"{tower}.layers", self.layers, cfg.num_layers)
        per_layer = {}
        for name, sizes in (("heads", cfg.num_heads), ("neurons", cfg.intermediate_size)):
            entries = {}
            for layer, removed in getattr(self, name).items():
                _sorted_unique(f"{tower}.{name} layer", [layer], cfg.num_layers)
                kept = _sorted_unique(f"{tower}.{name}[{layer}]", removed, sizes[int(layer)])
                if kept:
                    entries[int(layer)] = kept
            per_layer[name] = dict(sorted(entries.items()))
        return TowerPlan(per_layer["heads"], per_layer["neurons"], layers)

    def is_empty(self) -> bool:
        return not (self.heads or self.neurons or self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"heads": {str(k): list(v) for k, v in self.heads.items()},
                "neurons": {str(k): list(v) for k, v in self.neurons.items()}, "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TowerPlan:
        unknown = sorted(set(data) - {"heads", "neurons", "layers"})
        if unknown:
            raise ValueError(f"TowerPlan: unknown field(s) {unknown}; known fields are heads, neurons, layers")
        return cls({int(k): tuple(v) for k, v in data.get("heads", {}).items()},
                   {int(k): tuple(v) for k, v in data.get("neurons", {}).items()}, tuple(data.get("layers", ())))


@dataclass(frozen=True)
class PrunePlan:
    """Removals per tower (``vision`` and/or ``text``)."""

    towers: dict[str, TowerPlan] = field(default_factory=dict)

    def validate(self, config: ModelConfig) -> PrunePlan:
        if config.kind != "clip":
            raise ValueError(f"structured pruning supports CLIP dual encoders (kind='clip'), got kind="
                             f"{config.kind!r}; fusion layers share head counts with their cross-attention")
        return PrunePlan({t: p.validate(tower_config(config, t), t) for t, p in self.towers.items()})

    def tower(self, name: str) -> TowerPlan:
        return self.towers.get(name, TowerPlan())

    def to_dict(self) -> dict[str, Any]:
        return {tower: plan.to_dict() for tower, plan in self.towers.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        unknown = sorted(set(data) - set(TOWERS))
        if unknown:
            raise ValueError(f"PrunePlan: unknown tower(s) {unknown}; expected {list(TOWERS)}")
        return cls({tower: TowerPlan.from_dict(plan) for tower, plan in data.items()})
