"""SmartTrim forward: keep-everything equals the base model; hard (physical) equals masked (batched) inference."""

from __future__ import annotations

import pytest
import torch

import vlprune
from helpers.tiny import tiny_fusion_config
from vlprune.models.flops import model_gflops
from vlprune.trim import SmartTrim, SmartTrimConfig
from vlprune.trim.flops import record_gflops, static_gflops
from vlprune.trim.model import MODES


def _inputs(tokenizer):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids, mask = tokenizer(["what colour is the object at top left", "is there a red circle",
                           "how many blue objects are there"])
    return pixels, ids, mask


def _fusion(style: str):
    """A tiny fusion model: ALBEF-style (unimodal layers, then fusion layers) or BLIP-style (the fusion pass
    starts again from the token embeddings and runs every layer with cross-attention)."""
    text = {"cross_attention_layers": (0, 1, 2), "fusion_from_embeddings": True} if style == "blip" else {}
    torch.manual_seed(0)
    return vlprune.build_model(tiny_fusion_config(text=text)).eval()


def _randomise(trim: SmartTrim, seed: int = 0) -> SmartTrim:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trim.trimmers.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return trim


@pytest.mark.parametrize("mode", MODES)
def test_keeping_everything_is_the_base_model(fusion_model, tokenizer, mode):
    pixels, ids, mask = _inputs(tokenizer)
    trim = SmartTrim(fusion_model, SmartTrimConfig()).eval()  # stable init: every score is init_logit > 0
    with torch.no_grad():
        expected = fusion_model.fused_cls(pixels, ids, mask)
        out = trim(pixels, ids, mask, mode="masked" if mode == "soft" else mode)
    assert torch.allclose(out.cls, expected, atol=1e-6)
    for name, keep in out.record.keep.items():
        valid = out.record.valid[name]
        assert bool(((keep > 0.5) | (False if valid is None else ~valid)).all()), name


@pytest.mark.parametrize("style", ["albef", "blip"])
def test_full_mode_is_the_models_fused_cls(tokenizer, style):
    model = _fusion(style)
    pixels, ids, mask = _inputs(tokenizer)
    trim = _randomise(SmartTrim(model, SmartTrimConfig()).eval())
    with torch.no_grad():
        assert torch.equal(trim(pixels, ids, mask, mode="full").cls, model.fused_cls(pixels, ids, mask))


@pytest.mark.parametrize("style", ["albef", "blip"])
@pytest.mark.parametrize("tokens,heads", [("cross", "learned"), ("random", "random")])
def test_masked_with_every_target_one_is_full(tokenizer, style, tokens, heads):
    model = _fusion(style)
    pixels, ids, mask = _inputs(tokenizer)
    config = SmartTrimConfig(tokens=tokens, heads=heads, target_vision=1.0, target_text=1.0, target_heads=1.0)
    trim = SmartTrim(model, config).eval()  # learned trimmers at their init keep everything
    trim.generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        masked, full = trim(pixels, ids, mask, mode="masked"), trim(pixels, ids, mask, mode="full")
    assert torch.allclose(masked.cls, full.cls, atol=1e-6)
    assert torch.equal(full.cls, model.fused_cls(pixels, ids, mask))


@pytest.mark.parametrize("style", ["albef", "blip"])
def test_image_trimmers_see_the_unimodal_text_cls(tokenizer, style):
    """The vision trimmers' ``c_c`` is the text [CLS] after the model's unimodal pass (every layer for BLIP)."""
    model = _fusion(style)
    pixels, ids, mask = _inputs(tokenizer)
    trim = SmartTrim(model, SmartTrimConfig()).eval()
    seen = []
    trim.trimmers["tokens__vision_0"].register_forward_hook(lambda module, args, out: seen.append(args[2]))
    with torch.no_grad():
        trim(pixels, ids, mask, mode="masked")
        expected = model.text(ids, mask).x[:, 0]
    assert torch.allclose(seen[0], expected, atol=1e-6)


def test_blip_style_hard_batch1_equals_masked_batched(tokenizer):
    model = _fusion("blip")
    pixels, ids, mask = _inputs(tokenizer)
    trim = _randomise(SmartTrim(model, SmartTrimConfig()).eval())
    with torch.no_grad():
        masked = trim(pixels, ids, mask, mode="masked")
        one = torch.cat([trim(pixels[i:i + 1], ids[i:i + 1], mask[i:i + 1], mode="hard").cls for i in range(3)])
    assert float(masked.record.counts("tokens:text.2").sum()) < float(mask[:, 1:].sum()) + 3  # text was trimmed
    assert torch.allclose(one, masked.cls, atol=1e-5)


def test_forced_keep_with_trained_looking_trimmers_is_the_base_model(fusion_model, tokenizer):
    pixels, ids, mask = _inputs(tokenizer)
    trim = _randomise(SmartTrim(fusion_model, SmartTrimConfig()).eval())
    with torch.no_grad():
        for name, module in trim.trimmers.items():
            last = module.local[-1] if "tokens" in name else module.net[-1]
            last.bias.fill_(1e4)  # forces every token and head to be kept
        out = trim(pixels, ids, mask, mode="hard")
        expected = fusion_model.fused_cls(pixels, ids, mask)
    assert torch.allclose(out.cls, expected, atol=1e-5)


@pytest.mark.parametrize("tokens,heads", [("cross", "learned"), ("local", "off"), ("off", "learned")])
def test_hard_batch1_equals_masked_batched(fusion_model, tokenizer, tokens, heads):
    pixels, ids, mask = _inputs(tokenizer)
    trim = _randomise(SmartTrim(fusion_model, SmartTrimConfig(tokens=tokens, heads=heads)).eval())
    with torch.no_grad():
        masked = trim(pixels, ids, mask, mode="masked")
        batched_hard = trim(pixels, ids, mask, mode="hard").cls
        one = torch.cat([trim(pixels[i:i + 1], ids[i:i + 1], mask[i:i + 1], mode="hard").cls for i in range(3)])
    kept = [float(masked.record.counts(n).sum()) for n in masked.record.keep]
    full = SmartTrim(fusion_model, SmartTrimConfig(tokens="off", heads="off"))(pixels, ids, mask, "full").record
    assert sum(kept) < sum(float(full.counts(n).sum()) for n in full.keep)  # something was actually trimmed
    assert torch.allclose(one, masked.cls, atol=1e-5)
    assert torch.allclose(batched_hard, masked.cls, atol=1e-5)


def test_trimming_lowers_per_instance_flops(fusion_model, tokenizer):
    pixels, ids, mask = _inputs(tokenizer)
    trim = _randomise(SmartTrim(fusion_model, SmartTrimConfig()).eval())
    with torch.no_grad():
        trimmed = record_gflops(trim, trim(pixels, ids, mask).record)
        untrimmed = SmartTrim(fusion_model, SmartTrimConfig(tokens="off", heads="off"))
        full = record_gflops(untrimmed, untrimmed(pixels, ids, mask, "full").record)
    vision = fusion_model.config.vision
    base = static_gflops(fusion_model.config, [(vision.num_patches + 1,) * 2] * vision.num_layers, mask.sum(1))
    assert full == pytest.approx(base)
    assert (trimmed < full).all()
    with torch.no_grad():  # a full forward runs no trimmer, so the trimmers' own cost does not count
        assert record_gflops(trim, trim(pixels, ids, mask, "full").record) == pytest.approx(base)


def test_vision_only_flops_are_the_image_towers(fusion_model, tokenizer):
    pixels, ids, mask = _inputs(tokenizer)
    untrimmed = SmartTrim(fusion_model, SmartTrimConfig(tokens="off", heads="off"))
    trim = _randomise(SmartTrim(fusion_model, SmartTrimConfig()).eval())
    with torch.no_grad():
        full = record_gflops(untrimmed, untrimmed(pixels, ids, mask, "full").record, vision_only=True)
        record = trim(pixels, ids, mask).record
    assert full == pytest.approx([model_gflops(fusion_model.config)["vision_gflops"]] * 3)
    vision, text = trim.trimmer_macs(record, "vision"), trim.trimmer_macs(record, "text")
    assert torch.equal(vision + text, trim.trimmer_macs(record)) and (vision > 0).all() and (text > 0).all()
    trimmed = record_gflops(trim, record, vision_only=True)
    assert (trimmed < full).all() and (trimmed < record_gflops(trim, record)).all()


def test_soft_mode_is_differentiable_and_in_range(fusion_model, tokenizer):
    pixels, ids, mask = _inputs(tokenizer)
    trim = SmartTrim(fusion_model, SmartTrimConfig()).train()
    out = trim(pixels, ids, mask, mode="soft")
    ratios = trim.cost_ratios(out.record)
    assert set(ratios) == set(trim.targets())
    assert all(0 < float(r.detach()) <= 1 for r in ratios.values())
    sum(ratios.values()).backward()
    assert all(p.grad is not None for p in trim.trimmers.parameters())


def test_bad_mode_is_named(fusion_model, tokenizer):
    with pytest.raises(ValueError, match="mode='fast'"):
        SmartTrim(fusion_model, SmartTrimConfig())(*_inputs(tokenizer), mode="fast")
