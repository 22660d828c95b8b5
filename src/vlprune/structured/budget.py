"""From cost tables to a ``TowerPlan`` that meets a parameter budget.

Width: the lowest-scored heads and neuron groups are removed, ranked across all layers of the tower, the same
fraction of each kind at every step, until the tower holds at most the target parameter count. Depth: the
lowest-scored layers are dropped until the target is met. Equal scores (common for MoPE: recall moves in steps of
1/pairs) are ordered by a fixed pseudo-random permutation, not by layer position. A target that cannot be met
(nothing left to remove, or every layer would go) raises ``ValueError`` naming the smallest reachable size.
"""

from __future__ import annotations

import torch

from vlprune.models.io import Model
from vlprune.structured.importance import CostTable, Module, modules, neuron_groups
from vlprune.structured.plan import TowerPlan, tower_config
from vlprune.structured.prune import blocks


def tower_params(model: Model, tower: str) -> int:
    """Parameters of a tower including its projection (``num_params('vision' | 'text')``)."""
    return model.num_params(tower)


def target_count(model: Model, tower: str, fraction: float) -> int:
    """``fraction`` (0 < f <= 1) of the tower's parameters, as a count."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"target_params={fraction!r}: expected a fraction of the {tower} tower's parameters in "
                         "(0, 1]; 0 would prune everything")
    return int(fraction * tower_params(model, tower))


def ranked(model: Model, table: CostTable, kind: str) -> list[Module]:
    """Modules of ``kind``, least important first; ties in a fixed pseudo-random order (seed 0)."""
    listed = modules(model, table.tower, (kind,), table.groups)
    tiebreak = torch.randperm(len(listed), generator=torch.Generator().manual_seed(0)).tolist()
    return [m for _, _, m in sorted((table.score(m), t, m) for m, t in zip(listed, tiebreak))]


def _unit_cost(model: Model, tower: str, module: Module, groups: int) -> int:
    """Parameters a module's removal saves (a head: q/k/v rows and biases, o columns; a neuron: fc1 row, bias,
    fc2 column; a layer: all of the block's parameters)."""
    cfg = tower_config(model.config, tower)
    block = blocks(model, tower)[module.layer]
    if module.kind == "head":
        return 4 * cfg.width * cfg.head_dim + (3 * cfg.head_dim if cfg.qkv_bias else 0)
    if module.kind == "group":
        return len(neuron_groups(block.mlp.hidden, groups)[module.index]) * (2 * cfg.width + 1)
    return sum(p.numel() for p in block.parameters())


def _too_small(tower: str, target: int, reachable: int, total: int, how: str) -> ValueError:
    return ValueError(f"target_params={target / total:.3f} of the {tower} tower ({target:,} params) cannot be "
                      f"reached by {how}: the smallest reachable is {reachable / total:.3f} ({reachable:,}); raise "
                      "--target-params" + (" or lower --keep-layers" if how == "width pruning" else ""))


def width_plan(model: Model, table: CostTable, target: int) -> TowerPlan:
    """Remove the lowest-scored heads and neuron groups (equal fractions of each) until ``<= target`` params."""
    tower, groups = table.tower, table.groups
    order = []
    for kind in ("head", "group"):
        listed = ranked(model, table, kind)
        order += [((i + 1) / len(listed), kind, m) for i, m in enumerate(listed)]
    params = total = tower_params(model, tower)
    heads: dict[int, list[int]] = {}
    neurons: dict[int, list[int]] = {}
    for _, _, module in sorted(order, key=lambda r: (r[0], r[1])):
        if params <= target:
            break
        params -= _unit_cost(model, tower, module, groups)
        if module.kind == "head":
            heads.setdefault(module.layer, []).append(module.index)
        else:
            width = blocks(model, tower)[module.layer].mlp.hidden
            neurons.setdefault(module.layer, []).extend(neuron_groups(width, groups)[module.index])
    if params > target:
        raise _too_small(tower, target, params, total, "width pruning")
    return TowerPlan({k: tuple(v) for k, v in heads.items()}, {k: tuple(v) for k, v in neurons.items()})


def depth_plan(model: Model, table: CostTable, target: int) -> TowerPlan:
    """Drop the lowest-scored layers until ``<= target`` params; at least one layer stays."""
    tower = table.tower
    params = total = tower_params(model, tower)
    dropped: list[int] = []
    for module in ranked(model, table, "layer"):
        if params <= target:
            break
        dropped.append(module.layer)
        params -= _unit_cost(model, tower, module, table.groups)
    if params > target or len(dropped) == len(blocks(model, tower)):
        last = min(_unit_cost(model, tower, Module(tower, "layer", i), 1) for i in range(len(blocks(model, tower))))
        smallest = total - sum(_unit_cost(model, tower, Module(tower, "layer", i), 1)
                               for i in range(len(blocks(model, tower)))) + last
        raise _too_small(tower, target, smallest, total, "dropping layers (one layer must stay)")
    return TowerPlan(layers=tuple(dropped))
