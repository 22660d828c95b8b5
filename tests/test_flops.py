"""The analytic FLOP counter agrees with torch's FlopCounterMode (math attention path, which it can see)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune.models.flops import attention_macs, gflops, layer_macs, model_gflops, vision_macs

ZERO_INIT_WARNING = "ignore:Initializing zero-element tensors:UserWarning"
TEXT_LENGTH = 40


def _measured_gflops(fn) -> float:
    """GFLOPs of one call, per sample (batch of 1) as FlopCounterMode counts them (2 x MACs)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 1e9


def _inputs(tokenizer):
    ids, mask = tokenizer(["a big red square at top left"])
    return torch.randn(1, 3, 32, 32), ids, mask


def _check(model, tokenizer) -> None:
    cfg = model.config
    pixels, ids, mask = _inputs(tokenizer)
    analytic = model_gflops(cfg, text_length=ids.shape[1])
    assert _measured_gflops(lambda: model.encode_image(pixels)) == pytest.approx(analytic["vision_gflops"], rel=0.01)
    assert _measured_gflops(lambda: model.encode_text(ids, mask)) == pytest.approx(analytic["text_gflops"], rel=0.01)
    if cfg.kind == "fusion":
        itm = _measured_gflops(lambda: model.itm_logits(pixels, ids, mask))
        total = analytic["vision_gflops"] + analytic["text_gflops"] + analytic["fusion_gflops"]
        assert itm == pytest.approx(total, rel=0.01)
        # exactly: ITM skips both projections into the embedding space and adds the 2-way head
        heads = gflops(cfg.text.width * 2 - cfg.vision.width * cfg.embed_dim - cfg.text.width * cfg.embed_dim)
        assert itm == pytest.approx(total + heads, rel=1e-9)
    else:
        assert "fusion_gflops" not in analytic


@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_analytic_flops_match_flop_counter(kind, clip_model, fusion_model, tokenizer):
    _check(clip_model if kind == "clip" else fusion_model, tokenizer)


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_non_uniform_model_matches(kind, tokenizer):
    torch.manual_seed(0)
    vision = {"num_layers": 3, "num_heads": [4, 0, 1], "intermediate_size": [64, 8, 0]}
    if kind == "clip":
        cfg = tiny_clip_config(vision=vision, text={"num_heads": [0, 3], "intermediate_size": [16, 0]})
    else:
        cfg = tiny_fusion_config(vision=vision, text={"num_heads": [2, 0, 1], "intermediate_size": [0, 16, 40]})
    _check(vlprune.build_model(cfg).eval(), tokenizer)


def test_hand_computed_layer():
    """One vision layer, 17 tokens, width 32, 4 heads x 8, MLP 64, by hand."""
    cfg = tiny_clip_config().vision
    projections = 4 * 17 * 32 * 32          # q, k, v, o
    attention = 2 * 4 * 17 * 17 * 8          # QK^T and AV
    mlp = 2 * 17 * 32 * 64
    assert layer_macs(cfg, 0, 17, 17) == projections + attention + mlp
    assert attention_macs(17, 17, 32, 32, 0, 8) == 0
    patch = 16 * 3 * 8 * 8 * 32
    assert vision_macs(cfg, 16) == patch + 2 * (projections + attention + mlp) + 32 * 16


def test_token_schedule_lowers_the_count():
    cfg = tiny_clip_config(vision={"num_layers": 3}).vision
    full = vision_macs(cfg, 16)
    assert vision_macs(cfg, 16, [17, 17, 17]) == full
    assert vision_macs(cfg, 16, [17, (17, 9), 9]) < full
    # the MLP of a layer whose tokens shrink after attention runs on the smaller count
    assert vision_macs(cfg, 16, [17, (17, 9), 17]) - vision_macs(cfg, 16, [17, 17, 17]) == -2 * 8 * 32 * 64
    with pytest.raises(ValueError, match="3 layers"):
        vision_macs(cfg, 16, [17, 17])


def test_text_length_scales_text_flops(clip_config):
    short, long = model_gflops(clip_config, 8)["text_gflops"], model_gflops(clip_config, 16)["text_gflops"]
    assert 2 * short < long < 4 * short  # linear terms double, attention terms quadruple
    assert model_gflops(clip_config)["text_gflops"] == model_gflops(clip_config, TEXT_LENGTH)["text_gflops"]
