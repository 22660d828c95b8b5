"""Token reduction (ToMe, EViT, random): exactness at no reduction, schedules, sizes, sources, FLOPs, errors."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vlprune
from vlprune.config import ConfigError
from vlprune.eval.flops import model_gflops
from vlprune.reduce import EViTConfig, RandomConfig, ToMeConfig, method_config, token_schedule


@pytest.fixture
def model(clip_config):
    torch.manual_seed(0)
    return vlprune.build_model(clip_config).eval()


def _record_counts(model):
    """Tokens entering each block's attention and MLP during the next forward."""
    seen = []
    hooks = [block.register_forward_pre_hook(lambda mod, args: seen.append(["attn", args[0].x.shape[1]]))
             for block in model.visual.blocks]
    hooks += [block.mlp.register_forward_pre_hook(lambda mod, args: seen.append(["mlp", args[0].shape[1]]))
              for block in model.visual.blocks]
    return seen, hooks


def _run(model, config, pixels):
    vlprune.apply(model, config)
    model.visual.trace_source = True
    seen, hooks = _record_counts(model)
    with torch.no_grad():
        state = model.visual(pixels)
    for hook in hooks:
        hook.remove()
    attn = [n for kind, n in seen if kind == "attn"]
    mlp = [n for kind, n in seen if kind == "mlp"]
    return state, list(zip(attn, mlp))


@pytest.mark.parametrize("config", [ToMeConfig(r=0), EViTConfig(layers=(0, 1), keep_ratio=1.0),
                                    RandomConfig(layers=(1,), keep_ratio=1.0), None])
def test_no_reduction_is_exactly_the_base_model(model, config):
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model.encode_image(pixels)
        vlprune.apply(model, config)
        assert torch.equal(model.encode_image(pixels), base)


def test_apply_none_restores_the_base_model(model):
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model.encode_image(pixels)
        vlprune.apply(model, EViTConfig(layers=(0,), keep_ratio=0.5))
        assert not torch.equal(model.encode_image(pixels), base)
        vlprune.apply(model, None)
        assert torch.equal(model.encode_image(pixels), base)


configs = st.one_of(
    st.builds(EViTConfig, layers=st.sets(st.integers(0, 1), min_size=1).map(lambda s: tuple(sorted(s))),
              keep_ratio=st.floats(0.05, 1.0), fuse=st.booleans(), renormalize=st.booleans()),
    st.builds(RandomConfig, layers=st.sets(st.integers(0, 1), min_size=1).map(lambda s: tuple(sorted(s))),
              keep_ratio=st.floats(0.05, 1.0), fuse=st.booleans(), seed=st.integers(0, 5)),
    st.builds(ToMeConfig, r=st.one_of(st.integers(0, 5), st.tuples(st.integers(0, 8), st.integers(0, 3)))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs)
def test_counts_follow_schedule_sizes_sum_sources_partition_cls_first(model, config):
    patches = model.config.vision.num_patches
    state, counts = _run(model, config, torch.randn(2, 3, 32, 32))
    assert counts == [tuple(pair) for pair in token_schedule(model)]
    assert state.x.shape[1] == counts[-1][1]
    size = state.size if state.size is not None else torch.ones(2, state.x.shape[1], 1)
    coverage = state.source.sum(dim=1)
    assert torch.equal(size.sum(dim=(1, 2)), coverage.sum(dim=1))  # size = number of original tokens covered
    if getattr(config, "fuse", True):  # merging keeps every patch: sizes sum to the count, sources partition
        assert torch.allclose(size.sum(dim=(1, 2)), torch.full((2,), patches + 1.0))
        assert torch.equal(coverage, torch.ones(2, patches + 1))
    else:  # prune-only: dropped patches are covered by nothing, kept ones exactly once
        assert set(coverage.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(state.source[:, 0, 0], torch.ones(2)) and state.source[:, 0].sum().item() == 2  # [CLS] first


@pytest.mark.parametrize("config", [ToMeConfig(r=3), EViTConfig(layers=(0,), keep_ratio=0.5),
                                    RandomConfig(layers=(1,), keep_ratio=0.4)])
def test_analytic_flops_follow_the_schedule(model, config):
    vlprune.apply(model, config)
    pixels = torch.randn(1, 3, 32, 32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_image(pixels)
    analytic = model_gflops(model.config, schedule=token_schedule(model))["vision_gflops"]
    assert analytic == pytest.approx(counter.get_total_flops() / 1e9, rel=0.01)
    assert analytic < model_gflops(model.config)["vision_gflops"]


@pytest.mark.parametrize("config, field", [
    (EViTConfig(keep_ratio=0.0), "keep_ratio"), (EViTConfig(keep_ratio=1.5), "keep_ratio"),
    (EViTConfig(layers=(7,)), "layers"), (RandomConfig(layers=(0, 0)), "layers"),
    (ToMeConfig(r=50), "r"), (ToMeConfig(r=(1, 2, 3)), "r"), (ToMeConfig(r=-1), "r")])
def test_bad_configs_name_the_field(model, config, field):
    with pytest.raises(ConfigError, match=rf"\.{field}="):
        vlprune.apply(model, config)
    assert model.reduction is None and all(b.mid_hook is None for b in model.visual.blocks)


def test_method_config_by_name():
    assert method_config("tome", r=4) == ToMeConfig(r=4)
    with pytest.raises(ConfigError, match="unknown token-reduction method"):
        method_config("nope")
    with pytest.raises(ConfigError, match="unknown field"):
        method_config("evit", keep=0.5)
