"""Methods are data plus a separate attach function; the model holds one opaque ``AttachedMethods`` handle and
hands hooks typed context fields (issue 28)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch

import vlprune
from vlprune.models.layers import AttachedMethods, ForwardContext
from vlprune.reduce import ELIPConfig, ToMeConfig, TRIPSConfig
from vlprune.reduce.base import ReduceConfig, attach_function, register_attach
from vlprune.reduce.elip import ELIPScratch, attach_elip
from vlprune.reduce.text_tokens import TextPruneConfig, apply_text_pruning

SRC = Path(__file__).resolve().parents[1] / "src" / "vlprune"
CAPTIONS = ["a big red square", "a cyan cross", "two green triangles"]


def test_configs_hold_no_surgery():
    for cls in (ToMeConfig, ELIPConfig, TRIPSConfig, TextPruneConfig):
        assert not hasattr(cls, "attach")
        assert cls.__dataclass_params__.frozen
    assert attach_function(ELIPConfig()) is attach_elip


def test_handle_records_both_towers_and_their_capabilities(fusion_model):
    assert fusion_model.attached is None and fusion_model.reduction is None
    vlprune.apply(fusion_model, ELIPConfig(stages=(1, 1), keep=(0.5,)))
    assert fusion_model.attached == AttachedMethods(image=ELIPConfig(stages=(1, 1), keep=(0.5,)),
                                                    text_guided_image=True)
    apply_text_pruning(fusion_model, TextPruneConfig(strategy="learned"))
    assert fusion_model.text_reduction == TextPruneConfig(strategy="learned")
    assert fusion_model.attached.image_guided_text and fusion_model.attached.text_guided_image
    vlprune.apply(fusion_model, None)  # the text method stays
    assert fusion_model.attached == AttachedMethods(text=TextPruneConfig(strategy="learned"), image_guided_text=True)
    apply_text_pruning(fusion_model, None)
    assert fusion_model.attached is None
    with pytest.raises(AttributeError):
        fusion_model.reduction = ToMeConfig(r=1)


def test_fusion_orders_towers_by_capability(fusion_model, tokenizer, pixels):
    ids, mask = tokenizer(CAPTIONS)
    apply_text_pruning(fusion_model, TextPruneConfig(strategy="learned"))
    vlprune.apply(fusion_model, ELIPConfig(stages=(1, 1), keep=(0.5,)))
    with pytest.raises(ValueError, match="each need the other modality first"):
        fusion_model.itm_logits(pixels, ids, mask)
    vlprune.apply(fusion_model, ToMeConfig(r=1))  # not text-guided: runs image first with the text pruned
    with torch.no_grad():
        assert fusion_model.itm_logits(pixels, ids, mask).shape == (len(CAPTIONS), 2)


def test_detach_resets_through_the_towers(clip_model):
    vlprune.apply(clip_model, ToMeConfig(r=1))
    clip_model.visual.trace_source = True
    vlprune.apply(clip_model, None)
    visual = clip_model.visual
    assert not visual.proportional_attn and not visual.trace_source
    assert all(b.pre_hook is None and b.mid_hook is None and not b.wants_keys and not b.wants_cls_attn
               for b in visual.blocks)


def test_a_new_method_attaches_through_the_registry_and_reads_typed_context(clip_model, tokenizer, pixels):
    seen = []

    @dataclass(frozen=True)
    class Probe(ReduceConfig):
        method = "probe-test"

    def attach_probe(model, config):
        def hook(block, state, ctx):
            seen.append((ctx.guide, ctx.num_patches))
            return state

        model.visual.blocks[0].pre_hook = hook

    register_attach(Probe, attach_probe)
    ids, mask = tokenizer(CAPTIONS)
    guide = clip_model.text_guide(ids, mask)
    vlprune.apply(clip_model, Probe())
    with torch.no_grad():
        clip_model.encode_image(pixels, guide=guide)
    assert seen[0][0] is guide and seen[0][1] == clip_model.config.vision.num_patches
    vlprune.apply(clip_model, None)
    assert clip_model.visual.blocks[0].pre_hook is None


def test_elip_keeps_its_scratch_in_method_state(clip_model, tokenizer, pixels):
    ids, mask = tokenizer(CAPTIONS)
    stages = (1, clip_model.config.vision.num_layers - 1)
    vlprune.apply(clip_model, ELIPConfig(stages=stages, keep=(0.5,), mode="cheap"))
    ctx = ForwardContext()
    with torch.no_grad():
        clip_model.visual(pixels, ctx, guide=clip_model.text_guide(ids, mask))
    assert ctx.method_state == ELIPScratch()  # written and consumed within the call
    vlprune.apply(clip_model, None)


def test_no_string_keyed_side_channel():
    assert "extras" not in {f.name for f in fields(ForwardContext)}
    for path in list((SRC / "models").rglob("*.py")) + list((SRC / "reduce").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.Attribute) and node.attr == "extras"), path
