"""Token reduction (ToMe, EViT, random): exactness at no reduction, schedules, sizes, sources, FLOPs, errors."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vlprune
from vlprune.config import ConfigError
from vlprune.method_registry import method_config
from vlprune.models.flops import model_gflops
from vlprune.reduce import ELIPConfig, EViTConfig, RandomConfig, ToMeConfig, TRIPSConfig, token_schedule
from vlprune.reduce.base import vision_gflops


@pytest.fixture
def model(clip_config):
    torch.manual_seed(0)
    return vlprune.build_model(clip_config).eval()


def _record_counts(model):
    """Tokens entering each block's attention and MLP during the next forward (the tiny model's one-layer
    stages make ELIP's faithful pass call no attention or MLP forward of its own)."""
    seen = []
    hooks = [block.attn.register_forward_pre_hook(lambda mod, args: seen.append(["attn", args[0].shape[1]]))
             for block in model.visual.blocks]
    hooks += [block.mlp.register_forward_pre_hook(lambda mod, args: seen.append(["mlp", args[0].shape[1]]))
              for block in model.visual.blocks]
    return seen, hooks


def _run(model, config, pixels, guide=None):
    vlprune.apply(model, config)
    model.visual.trace_source = True
    seen, hooks = _record_counts(model)
    guide = torch.randn(pixels.shape[0], model.config.vision.width) if guide is None else guide
    with torch.no_grad():
        state = model.visual(pixels, guide=guide)
    for hook in hooks:
        hook.remove()
    attn = [n for kind, n in seen if kind == "attn"]
    mlp = [n for kind, n in seen if kind == "mlp"]
    return state, list(zip(attn, mlp))


@pytest.mark.parametrize("config", [ToMeConfig(r=0), EViTConfig(layers=(0, 1), keep_ratio=1.0),
                                    RandomConfig(layers=(1,), keep_ratio=1.0), ELIPConfig(stages=(1, 1), keep=(1.0,)),
                                    TRIPSConfig(layers=(0,), keep_ratio=1.0), None])
def test_no_reduction_is_exactly_the_base_model(model, config):
    pixels = torch.randn(2, 3, 32, 32)
    guide = torch.randn(2, model.config.vision.width)
    with torch.no_grad():
        base = model.encode_image(pixels)
        vlprune.apply(model, config)
        assert torch.equal(model.encode_image(pixels, guide=guide), base)


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
    st.builds(ELIPConfig, stages=st.just((1, 1)), keep=st.tuples(st.floats(0.07, 1.0)), lam=st.floats(0.0, 1.0),
              mode=st.sampled_from(["faithful", "cheap"]), merge=st.booleans()),
    st.builds(TRIPSConfig, layers=st.sets(st.integers(0, 1), min_size=1).map(lambda s: tuple(sorted(s))),
              keep_ratio=st.floats(0.05, 1.0)),
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
    merging = getattr(config, "fuse", True) and getattr(config, "merge", True)
    if merging:  # every patch is kept or merged: sizes sum to the count, sources partition
        assert torch.allclose(size.sum(dim=(1, 2)), torch.full((2,), patches + 1.0))
        assert torch.equal(coverage, torch.ones(2, patches + 1))
    else:  # prune-only: dropped patches are covered by nothing, kept ones exactly once
        assert set(coverage.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(state.source[:, 0, 0], torch.ones(2)) and state.source[:, 0].sum().item() == 2  # [CLS] first


@pytest.mark.parametrize("config", [ToMeConfig(r=3), EViTConfig(layers=(0,), keep_ratio=0.5),
                                    RandomConfig(layers=(1,), keep_ratio=0.4), ELIPConfig(stages=(1, 1), keep=(0.5,)),
                                    ELIPConfig(stages=(1, 1), keep=(0.5,), mode="cheap"), TRIPSConfig(layers=(0,))])
def test_analytic_flops_follow_the_schedule_and_count_extra_passes(model, config):
    vlprune.apply(model, config)
    pixels = torch.randn(1, 3, 32, 32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_image(pixels, guide=torch.randn(1, model.config.vision.width))
    assert vision_gflops(model) == pytest.approx(counter.get_total_flops() / 1e9, rel=0.01)
    scheduled = model_gflops(model.config, schedule=token_schedule(model))["vision_gflops"]
    assert scheduled < model_gflops(model.config)["vision_gflops"]


def test_elip_keeps_one_plus_int_alpha_m_plus_one_per_stage():
    """As in the official code: 1 + int(α·M) + 1 tokens after each stage start, M = original patches (64)."""
    vision = vlprune.create_model("toy-clip").config.vision
    schedule = ELIPConfig().schedule(vision)
    assert [schedule[layer][0] for layer in (0, 2, 4, 10)] == [65, 1 + 57 + 1, 1 + 41 + 1, 1 + 25 + 1]
    assert [schedule[layer][0] for layer in (0, 2, 4, 10)] == [1 + 64, 2 + int(0.9 * 64), 2 + int(0.65 * 64),
                                                               2 + int(0.4 * 64)]


def test_elip_without_text_does_not_prune_unless_vision_only(model):
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model.encode_image(pixels)
        vlprune.apply(model, ELIPConfig(stages=(1, 1), keep=(0.5,), lam=0.8))
        assert torch.equal(model.encode_image(pixels), base)  # official ELIP: no text, no pruning
        vlprune.apply(model, ELIPConfig(stages=(1, 1), keep=(0.5,), lam=1.0))
        assert model.visual(pixels).x.shape[1] == 1 + 8 + 1


def test_text_guidance_changes_the_selection(model):
    """λ < 1 mixes the text in: two different guides keep different patches for the same image."""
    pixels = torch.randn(1, 3, 32, 32)
    vlprune.apply(model, TRIPSConfig(layers=(0,), keep_ratio=0.25))
    model.visual.trace_source = True
    with torch.no_grad():
        kept = [model.visual(pixels, guide=torch.randn(1, model.config.vision.width) * 5).source[0, 1:5].argmax(-1)
                for _ in range(6)]
    assert len({tuple(k.tolist()) for k in kept}) > 1


def test_trips_needs_the_text_guide_and_clip_guide_has_vision_width(model, tokenizer):
    vlprune.apply(model, TRIPSConfig(layers=(0,)))
    with pytest.raises(ValueError, match="text"):
        model.encode_image(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="guide must be"):
        model.encode_image(torch.randn(1, 3, 32, 32), guide=torch.randn(1, 7))
    ids, mask = tokenizer(["a red circle"])
    assert model.text_guide(ids, mask).shape == (1, model.config.vision.width)


def test_fusion_vqa_passes_its_question_as_guide(fusion_config, tokenizer):
    torch.manual_seed(0)
    model = vlprune.build_model(fusion_config).eval()
    vlprune.apply(model, TRIPSConfig(layers=(0,), keep_ratio=0.5))
    ids, mask = tokenizer(["what colour is the object at top left", "is there a red circle"])
    with torch.no_grad():
        logits = model.vqa_logits(torch.randn(2, 3, 32, 32), ids, mask)
    assert logits.shape == (2, fusion_config.num_answers) and torch.isfinite(logits).all()


@pytest.mark.parametrize("config, field", [
    (EViTConfig(keep_ratio=0.0), "keep_ratio"), (EViTConfig(keep_ratio=1.5), "keep_ratio"),
    (EViTConfig(layers=(7,)), "layers"), (RandomConfig(layers=(0, 0)), "layers"),
    (ToMeConfig(r=50), "r"), (ToMeConfig(r=(1, 2, 3)), "r"), (ToMeConfig(r=-1), "r"),
    (ELIPConfig(stages=(1, 2)), "stages"), (ELIPConfig(stages=(1, 1), keep=(0.5, 0.4)), "keep"),
    (ELIPConfig(stages=(1, 1), keep=(0.0,)), "keep"), (ELIPConfig(stages=(1, 1), keep=(0.5,), lam=1.5), "lam"),
    (ELIPConfig(stages=(1, 1), keep=(0.5,), mode="fast"), "mode"), (TRIPSConfig(layers=(5,)), "layers"),
    (TRIPSConfig(keep_ratio=0.0), "keep_ratio"), (TRIPSConfig(placement="middle"), "placement")])
def test_bad_configs_name_the_field(model, config, field):
    with pytest.raises(ConfigError, match=rf"\.{field}="):
        vlprune.apply(model, config)
    assert model.reduction is None and all(b.mid_hook is None for b in model.visual.blocks)


def test_method_config_by_name():
    assert method_config("tome", r=4) == ToMeConfig(r=4)
    with pytest.raises(ConfigError, match="unknown method"):
        method_config("nope")
    with pytest.raises(ConfigError, match="unknown field"):
        method_config("evit", keep=0.5)
