"""ELIP's text-token pruning ablation: hand-computed kept counts, physical removal == key masking, the pooled
token survives, image guidance only where the image comes first, clear config errors."""

from __future__ import annotations

import pytest
import torch

from vlprune.config import ConfigError
from vlprune.eval.evaluate import evaluate
from vlprune.models.layers import TokenState
from vlprune.reduce.text_tokens import TextPruneConfig, apply_text_pruning, kept_tokens, prune_text, text_schedule

CAPTIONS = ["a big red square at top left and a small blue circle at bottom right",
            "a cyan cross", "two green triangles and a yellow star at the centre of the image"]


def test_kept_counts_and_schedule_hand_computed(clip_config):
    # 12 real tokens, 2 protected: drop floor(0.4 * 10) = 4 -> keep 8; 3 real: drop floor(0.4) = 0
    assert kept_tokens(torch.tensor([12, 3, 2]), 0.4).tolist() == [8, 3, 2]
    assert text_schedule(TextPruneConfig(), clip_config.text, 12) == [12, 8]
    assert text_schedule(None, clip_config.text, 12) == [12, 12]


def test_prune_keeps_first_and_pooled_tokens_in_order():
    x = torch.arange(2 * 8, dtype=torch.float).reshape(2, 8, 1)
    mask = torch.tensor([[1] * 6 + [0] * 2, [1] * 4 + [0] * 4], dtype=torch.bool)
    post = -torch.arange(8.0).expand(2, 8)
    out = prune_text(TokenState(x=x, mask=mask), post.clone(), torch.tensor([5, 3]), 0.4)
    # row 0: 6 real, keep 6 - floor(0.4 * 4) = 5: first, pooled (5) and the earliest others; row 1 keeps all 4
    assert out.x[0, :, 0].tolist() == [0, 1, 2, 3, 5]
    assert out.mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    assert out.x[1, :4, 0].tolist() == [8, 9, 10, 11]
    assert out.source[0].argmax(dim=1).tolist() == [0, 1, 2, 3, 5]


def _masking_reference(model, strategy: str):
    """The same selection as ``apply_text_pruning`` but applied as a key mask (no token removed)."""
    config = TextPruneConfig(strategy=strategy)
    apply_text_pruning(model, config)
    block = model.text.blocks[config.layer(model.config.text)]
    pruning = block.pre_hook

    def mask_instead(blk, state, ctx):
        pruned = pruning(blk, state, ctx)
        keep = torch.zeros_like(state.mask)
        for row in range(state.x.shape[0]):
            keep[row, pruned.source[row][pruned.mask[row]].argmax(dim=1)] = True
        return TokenState(x=state.x, mask=keep)

    block.pre_hook = mask_instead


@pytest.mark.parametrize("strategy", ["post", "random"])
def test_removing_tokens_equals_masking_them_clip(clip_model, tokenizer, strategy):
    ids, mask = tokenizer(CAPTIONS)
    with torch.no_grad():
        base = clip_model.encode_text(ids, mask)
        apply_text_pruning(clip_model, TextPruneConfig(strategy=strategy))
        pruned = clip_model.encode_text(ids, mask)
        _masking_reference(clip_model, strategy)
        masked = clip_model.encode_text(ids, mask)
        apply_text_pruning(clip_model, None)
        again = clip_model.encode_text(ids, mask)
    assert torch.allclose(pruned, masked, atol=1e-5)
    assert not torch.allclose(pruned, base, atol=1e-3)   # tokens really went
    assert torch.equal(again, base)                       # and off means the base model exactly


def test_learned_pruning_matches_masking_on_fusion_vqa(fusion_model, tokenizer, pixels):
    ids, mask = tokenizer(CAPTIONS)
    with torch.no_grad():
        apply_text_pruning(fusion_model, TextPruneConfig(strategy="learned"))
        pruned = fusion_model.vqa_logits(pixels, ids, mask)
        _masking_reference(fusion_model, "learned")
        masked = fusion_model.vqa_logits(pixels, ids, mask)
    assert torch.allclose(pruned, masked, atol=1e-5)


def test_learned_pruning_needs_the_image(clip_model, tokenizer):
    apply_text_pruning(clip_model, TextPruneConfig(strategy="learned"))
    with pytest.raises(ValueError, match="'learned' ranks caption tokens by the paired image"):
        clip_model.encode_text(*tokenizer(CAPTIONS))


def test_fusion_retrieval_with_pruned_text_records_the_method(fusion_model, tokenizer):
    apply_text_pruning(fusion_model, TextPruneConfig(strategy="post"))
    result = evaluate(fusion_model, tokenizer, "retrieval", "toyworld:val:12", batch_size=5, rerank_k=3)
    assert result["costs"]["text_method"]["strategy"] == "post"
    assert 0.0 <= result["metrics"]["image_retrieval_recall@1"] <= 1.0


@pytest.mark.parametrize("kwargs, field", [({"strategy": "first"}, "strategy"), ({"drop_ratio": 1.0}, "drop_ratio"),
                                           ({"drop_ratio": -0.1}, "drop_ratio")])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"TextPruneConfig\.{field}="):
        TextPruneConfig(**kwargs)


@pytest.mark.parametrize("layer", [0, 2])
def test_start_layer_outside_the_unimodal_encoder_is_refused(clip_model, layer):
    with pytest.raises(ConfigError, match=r"start_layer=.* expected a layer in \[1, 2\)"):
        apply_text_pruning(clip_model, TextPruneConfig(start_layer=layer))
