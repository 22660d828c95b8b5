"""Matched budgets: each method's knob is solved so methods compare at equal analytic vision GFLOPs."""

import pytest

from vlprune.config import ConfigError
from vlprune.reduce.budget import MATCHABLE, at_budget, vision_gflops_of
from vlprune.registry import model_config


@pytest.mark.parametrize("arch", ["toy-clip", "vit-b16-clip"])
@pytest.mark.parametrize("method", sorted(MATCHABLE))
@pytest.mark.parametrize("cut", [0.15, 0.3, 0.45])
def test_each_method_lands_within_two_points_of_the_cut(arch, method, cut):
    config = model_config(arch)
    fixed = {"mode": "cheap"} if method == "elip" else {}
    chosen = at_budget(method, config, cut, **fixed)
    reached = 1 - vision_gflops_of(chosen, config) / vision_gflops_of(None, config)
    assert chosen.method == method and abs(reached - cut) < 0.02, MATCHABLE[method](chosen)
    if method == "elip":
        assert chosen.mode == "cheap" and chosen.lam == 0.8  # fields not being solved are kept


@pytest.mark.parametrize("method", ["evit", "tome", "trips"])
def test_no_cut_is_the_mildest_setting(method):
    config = model_config("toy-clip")
    assert vision_gflops_of(at_budget(method, config, 0.0), config) == vision_gflops_of(None, config)


def test_stronger_cut_never_costs_more():
    config = model_config("toy-clip")
    costs = [vision_gflops_of(at_budget("evit", config, cut), config) for cut in (0.1, 0.2, 0.3, 0.4)]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("cut", [-0.1, 1.0, 1.5])
def test_bad_cut_names_the_field(cut):
    with pytest.raises(ConfigError, match="cut="):
        at_budget("evit", model_config("toy-clip"), cut)


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="unknown method 'none'"):
        at_budget("none", model_config("toy-clip"), 0.3)
