"""Budgets: width and depth plans meet the parameter target with the lowest-scored modules; impossible targets
raise one clear error."""

from __future__ import annotations

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.structured import prune
from vlprune.structured.budget import depth_plan, target_count, width_plan
from vlprune.structured.config import PruneConfig
from vlprune.structured.importance import CostTable
from vlprune.structured.plan import PrunePlan


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 4})).eval()


def _table(kind_scores: dict) -> CostTable:
    return CostTable("test", "vision", groups=4, **kind_scores)


def test_width_plan_meets_the_target_with_the_lowest_scores(model):
    heads = [[float(4 * layer + h) for h in range(4)] for layer in range(4)]  # layer 0 head 0 is the least useful
    groups = [[100.0 + 4 * layer + g for g in range(4)] for layer in range(4)]
    target = target_count(model, "vision", 0.6)
    plan = width_plan(model, _table({"heads": heads, "neuron_groups": groups}), target)
    small = prune(model, PrunePlan({"vision": plan}))
    assert small.num_params("vision") <= target
    removed_heads = [(layer, h) for layer, hs in plan.heads.items() for h in hs]
    kept_scores = [heads[layer][h] for layer in range(4) for h in range(4) if (layer, h) not in removed_heads]
    assert max(heads[layer][h] for layer, h in removed_heads) < min(kept_scores)
    assert plan.heads and plan.neurons  # both kinds lose the same fraction
    assert plan.neurons.get(0, ())[:16] == tuple(range(16))  # group 0 of layer 0: neurons 0..15


def test_depth_plan_drops_the_lowest_layers(model):
    target = target_count(model, "vision", 0.6)
    plan = depth_plan(model, _table({"layers": [3.0, 0.0, 2.0, 1.0]}), target)
    assert plan.layers[:2] == (1, 3)
    assert prune(model, PrunePlan({"vision": plan})).num_params("vision") <= target


def test_full_target_removes_nothing(model):
    plan = width_plan(model, _table({"heads": [[0.0] * 4] * 4, "neuron_groups": [[0.0] * 4] * 4}),
                      target_count(model, "vision", 1.0))
    assert plan.is_empty()


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_targets_outside_zero_one_are_refused(model, fraction):
    with pytest.raises(ValueError, match="target_params"):
        target_count(model, "vision", fraction)
    with pytest.raises(ValueError, match="PruneConfig.target_params"):
        PruneConfig(target_params=fraction)


def test_unreachable_targets_name_the_smallest_reachable(model):
    tiny_target = target_count(model, "vision", 0.01)
    message = r"dropping layers \(one layer must stay\): the smallest reachable is 0\.[0-9]+"
    with pytest.raises(ValueError, match=message):
        depth_plan(model, _table({"layers": [0.0, 1.0, 2.0, 3.0]}), tiny_target)
    with pytest.raises(ValueError, match="width pruning.*raise --target-params"):
        width_plan(model, _table({"heads": [[0.0] * 4] * 4, "neuron_groups": [[0.0] * 4] * 4}), tiny_target)


def test_a_table_without_the_needed_kind_says_so(model):
    with pytest.raises(ValueError, match="no head scores"):
        width_plan(model, _table({"layers": [0.0] * 4}), target_count(model, "vision", 0.5))


def test_ties_are_not_broken_by_layer_position(model):
    flat = {"heads": [[0.0] * 4 for _ in range(4)], "neuron_groups": [[0.0] * 4 for _ in range(4)]}
    plan = width_plan(model, _table(flat), target_count(model, "vision", 0.8))
    assert len(plan.heads) > 1  # equal scores: the removed heads are spread over several layers, not layer 0 first
