"""Training objectives: ITC by hand, BERT masking, hard negatives, the combined ALBEF objective."""

from __future__ import annotations

import math

import pytest
import torch

from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.models.contrastive import itc_loss, sample_hard_negatives
from vlprune.tokenizer import MASK_ID, SPECIAL_TOKENS
from vlprune.train.objectives import Objective, mask_tokens
from vlprune.train.trainer import TrainContext


def _ctx(seed: int = 0) -> TrainContext:
    return TrainContext(step=1, rank=0, world_size=1, generator=torch.Generator().manual_seed(seed),
                        device=torch.device("cpu"))


def _batch(tokenizer, config, n: int = 4, split: str = "train") -> dict:
    pairs = ToyPairs(ToyWorld(split, image_size=config.vision.image_size, size=n))
    return Collate(tokenizer, config.vision)([pairs[i] for i in range(n)])


# -- ITC ------------------------------------------------------------------------------------------------

def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_itc_loss_hand_computed_2x2():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = 2.0  # exp(log 2)
    # image -> text logits: scale * image @ text.T = [[2, 1.2], [0, 1.6]]; text -> image: its transpose
    per_image = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2
    per_text = (_ce([2.0, 0.0], 0) + _ce([1.2, 1.6], 1)) / 2
    expected = (per_image + per_text) / 2
    loss = itc_loss(image, text, torch.tensor(math.log(scale)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # by hand: log(1+e^-0.8)=0.3711, log(1+e^-1.6)=0.1839, log(1+e^-2)=0.1269, log(1+e^-0.4)=0.5130
    assert expected == pytest.approx((0.3711 + 0.1839 + 0.1269 + 0.5130) / 4, abs=1e-4)


def test_itc_loss_clamps_the_temperature_at_100():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.1, 0.0], [0.0, 0.1]])
    at_100 = itc_loss(image, text, torch.tensor(math.log(100.0)))
    # scale 100: every row is CE([10, 0], own) = log(1 + e^-10); an unclamped 1e4 would give ~e^-1000 = 0
    assert at_100.item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-3)
    assert itc_loss(image, text, torch.tensor(math.log(1e4))).item() == pytest.approx(at_100.item(), rel=1e-6)


def test_itc_loss_gradient_reaches_embeddings_and_scale():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    scale = torch.tensor(2.0, requires_grad=True)
    itc_loss(image, text, scale).backward()
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0 and scale.grad != 0
    # matched pairs far apart from the rest give a loss near zero
    eye = torch.eye(4, 8)
    assert itc_loss(eye, eye, torch.tensor(math.log(100.0))).item() < 1e-6


# -- masking --------------------------------------------------------------------------------------------

def test_mask_tokens_never_touches_special_tokens_or_padding(tokenizer):
    ids, mask = tokenizer(["a big red square at top left and a small blue circle", "a red square"] * 8)
    masked, labels = mask_tokens(ids, mask, len(tokenizer), torch.Generator().manual_seed(0), prob=0.5)
    special = ids < len(SPECIAL_TOKENS)
    assert torch.equal(masked[special], ids[special])
    assert (labels[special] == -100).all() and (labels[mask == 0] == -100).all()
    chosen = labels != -100
    assert chosen.any()
    assert torch.equal(labels[chosen], ids[chosen])             # labels are the original ids
    assert torch.equal(masked[~chosen], ids[~chosen])           # only chosen tokens may change
    # with every word chosen: ~80% [MASK], ~10% a random word, ~10% unchanged; never a special token
    big_ids, big_mask = tokenizer(["a big red square at top left and a small blue circle"] * 400)
    masked, labels = mask_tokens(big_ids, big_mask, len(tokenizer), torch.Generator().manual_seed(1), prob=1.0)
    words = big_ids >= len(SPECIAL_TOKENS)
    assert torch.equal(labels != -100, words)
    frac_mask = (masked[words] == MASK_ID).float().mean().item()
    assert 0.77 < frac_mask < 0.83
    others = masked[words & (masked != MASK_ID)]
    assert (others >= len(SPECIAL_TOKENS)).all() and (others < len(tokenizer)).all()


def test_mask_tokens_is_deterministic_with_a_generator(tokenizer):
    ids, mask = tokenizer(["a big red square at top left and a small blue circle"] * 4)
    a = mask_tokens(ids, mask, len(tokenizer), torch.Generator().manual_seed(5))
    b = mask_tokens(ids, mask, len(tokenizer), torch.Generator().manual_seed(5))
    c = mask_tokens(ids, mask, len(tokenizer), torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


# -- hard negatives -------------------------------------------------------------------------------------

def test_hard_negatives_are_never_the_diagonal():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        sim = torch.randn(6, 6, generator=g)
        sim.fill_diagonal_(50.0)  # the positives dominate the softmax
        neg = sample_hard_negatives(sim, g)
        assert neg.shape == (6,) and (neg != torch.arange(6)).all()
        assert ((neg >= 0) & (neg < 6)).all()
    # extreme similarities (off-diagonal softmax underflows to 0) still give a valid negative
    sim = torch.full((3, 3), -100.0).fill_diagonal_(100.0)
    assert (sample_hard_negatives(sim, g) != torch.arange(3)).all()


def test_hard_negatives_follow_the_similarity():
    g = torch.Generator().manual_seed(0)
    sim = torch.zeros(3, 3)
    sim[0, 2] = sim[1, 0] = sim[2, 1] = 20.0  # one clear hardest negative per row
    for _ in range(5):
        assert sample_hard_negatives(sim, g).tolist() == [2, 0, 1]


def test_hard_negatives_need_two_pairs():
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sample_hard_negatives(torch.zeros(1, 1), torch.Generator())


# -- the combined objective -----------------------------------------------------------------------------

def test_albef_objective_on_a_tiny_fusion_model(fusion_model, fusion_config, tokenizer):
    torch.manual_seed(0)
    fusion_model.train()
    batch = _batch(tokenizer, fusion_config)
    out = Objective({"itc": 1.0, "itm": 1.0, "mlm": 1.0})(fusion_model, batch, _ctx())
    for name in ("itc", "itm", "mlm", "loss"):
        assert out[name].ndim == 0 and torch.isfinite(out[name]), name
    assert out["loss"].item() == pytest.approx((out["itc"] + out["itm"] + out["mlm"]).item(), rel=1e-6)
    # ITM has 1 positive for 2 negatives: an untrained head is near log(2) ~ 0.69 (not 0, not huge)
    assert 0.3 < out["itm"].item() < 1.5
    out["loss"].backward()
    for head in (fusion_model.itm_head, fusion_model.mlm_head):
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert fusion_model.visual.patch_embed.weight.grad.abs().sum() > 0
    assert fusion_model.logit_scale.grad is not None


def test_objective_weights_scale_the_total(fusion_model, fusion_config, tokenizer):
    batch = _batch(tokenizer, fusion_config)
    out = Objective({"itc": 0.5, "itm": 2.0})(fusion_model, batch, _ctx())
    assert "mlm" not in out
    assert out["loss"].item() == pytest.approx(0.5 * out["itc"].item() + 2.0 * out["itm"].item(), rel=1e-6)
    same = Objective({"itc": 0.5, "itm": 2.0})(fusion_model, batch, _ctx())
    assert torch.equal(out["itm"], same["itm"])  # all randomness comes from ctx.generator


def test_mlm_with_no_token_chosen_is_zero_not_nan(fusion_model, fusion_config, tokenizer):
    batch = _batch(tokenizer, fusion_config, n=1)
    ids, mask = tokenizer(["red"])  # one word: often nothing is chosen at 15%
    batch.update(input_ids=ids, attention_mask=mask)
    seed = next(s for s in range(100)
                if (mask_tokens(ids, mask, len(tokenizer), torch.Generator().manual_seed(s))[1] == -100).all())
    out = Objective({"mlm": 1.0})(fusion_model, batch, _ctx(seed))
    assert torch.isfinite(out["loss"]) and out["mlm"].item() == 0.0


def test_vqa_objective(fusion_model, fusion_config, tokenizer):
    batch = _batch(tokenizer, fusion_config)
    batch["answer"] = batch["answer"] % fusion_config.num_answers  # the tiny head has 5 answers
    out = Objective({"vqa": 1.0})(fusion_model, batch, _ctx())
    assert torch.isfinite(out["vqa"]) and 0.0 <= out["vqa_acc"].item() <= 1.0


def test_fusion_tasks_on_a_clip_model_raise(clip_model, clip_config, tokenizer):
    batch = _batch(tokenizer, clip_config)
    for task in ("itm", "mlm", "vqa"):
        with pytest.raises(ValueError, match="fusion model"):
            Objective({"itc": 1.0, task: 1.0})(clip_model, batch, _ctx())
    out = Objective({"itc": 1.0})(clip_model, batch, _ctx())
    assert torch.isfinite(out["loss"]) and out["temperature"].item() == pytest.approx(0.07, rel=1e-3)


def test_unknown_or_empty_tasks_raise():
    with pytest.raises(ValueError, match="choose from"):
        Objective({"itc": 1.0, "captioning": 1.0})
    with pytest.raises(ValueError, match="choose from"):
        Objective({})


# -- training with token reduction on -------------------------------------------------------------------

def _guides_seen(model):
    seen = []
    model.visual.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("guide")),
                                           with_kwargs=True)
    return seen


def test_objective_guides_reduction_with_the_caption(clip_config, tokenizer):
    import vlprune
    from vlprune.reduce import ELIPConfig

    torch.manual_seed(0)
    model = vlprune.build_model(clip_config).train()
    batch = _batch(tokenizer, clip_config)
    vlprune.apply(model, ELIPConfig(stages=(1, 1), keep=(0.5,)))
    seen = _guides_seen(model)
    out = Objective({"itc": 1.0})(model, batch, _ctx())
    out["loss"].backward()
    expected = model.text_guide(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(seen[0], expected) and not seen[0].requires_grad
    assert torch.isfinite(out["loss"]) and model.visual.patch_embed.weight.grad is not None
    vlprune.apply(model, None)
    _guides_seen(model)  # without a method no guide is computed
    assert model.reduction is None


def test_objective_guides_vqa_with_the_question(fusion_config, tokenizer):
    import vlprune
    from vlprune.reduce import TRIPSConfig

    torch.manual_seed(0)
    model = vlprune.build_model(fusion_config).train()
    batch = _batch(tokenizer, fusion_config)
    batch["answer"] = batch["answer"] % fusion_config.num_answers  # the tiny model's small answer head
    vlprune.apply(model, TRIPSConfig(layers=(0,), keep_ratio=0.5))
    seen = _guides_seen(model)
    out = Objective({"vqa": 1.0, "itc": 0.5, "itm": 0.5})(model, batch, _ctx())
    assert torch.isfinite(out["loss"])
    assert torch.equal(seen[0], model.text_guide(batch["question_ids"], batch["question_mask"]))
