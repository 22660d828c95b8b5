"""Retrieval with text-guided token reduction: the unguided base ranks, each query's top-k pairs are
re-encoded with the pair's text as guide and re-scored."""

import pytest
import torch

import vlprune
from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.evaluate import _image_states, _pair_scorer, _text_states, evaluate_retrieval
from vlprune.reduce import ELIPConfig, EViTConfig, TRIPSConfig


@pytest.fixture
def world():
    return ToyWorld("val", image_size=32)


def test_guided_at_keep_one_reproduces_the_unguided_ranking(clip_model, tokenizer, world):
    base = evaluate_retrieval(clip_model, tokenizer, world, 24)
    vlprune.apply(clip_model, ELIPConfig(stages=(1, 1), keep=(1.0,), lam=0.5))
    guided = evaluate_retrieval(clip_model, tokenizer, world, 24, rerank_k=5)
    assert guided["second_stage"] == "guided re-encoding + cosine" and guided["rerank_k"] == 5
    for key in ("image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@10"):
        assert guided[key] == pytest.approx(base[key]) and guided["first_stage_" + key] == pytest.approx(base[key])
    assert clip_model.reduction is not None  # the method is back on after the unguided first stage


@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_second_stage_scores_are_the_guided_pair_scores(kind, clip_model, fusion_model, tokenizer, world):
    model = clip_model if kind == "clip" else fusion_model
    captions = [world.scene(i).caption for i in range(6)]
    images = _image_states(model, world, 6, 6, keep_pixels=True)
    texts = _text_states(model, tokenizer, captions, 6, with_guides=True)
    vlprune.apply(model, TRIPSConfig(layers=(0,), keep_ratio=0.5))
    rows, cols = torch.tensor([0, 3, 5]), torch.tensor([2, 3, 1])
    scores = _pair_scorer(model, images, texts, guided=True)(rows, cols)
    pixels = to_pixels([world.image(int(i)) for i in rows], model.config.vision)
    ids, mask = tokenizer([captions[int(j)] for j in cols])
    with torch.no_grad():
        if kind == "clip":
            image = model.encode_image(pixels, normalize=True, guide=model.text_guide(ids, mask))
            expected = (image * model.encode_text(ids, mask, normalize=True)).sum(-1)
        else:
            expected = model.itm_score(pixels, ids, mask)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_unguided_clip_has_no_second_stage_and_guided_needs_k(clip_model, tokenizer, world):
    vlprune.apply(clip_model, EViTConfig(layers=(1,), keep_ratio=0.5))
    assert "rerank_k" not in evaluate_retrieval(clip_model, tokenizer, world, 8)
    vlprune.apply(clip_model, TRIPSConfig(layers=(0,), keep_ratio=0.5))
    with pytest.raises(ValueError, match="--rerank-k must be >= 1"):
        evaluate_retrieval(clip_model, tokenizer, world, 8, rerank_k=0)
