"""Distillation losses on hand-computed cases, the layer mapping through ``layer_map``, and a short run."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.models.contrastive import itc_loss
from vlprune.structured import PrunePlan, TowerPlan, prune
from vlprune.structured.distill import DistillObjective, feature_loss, hidden_loss, similarity_loss
from vlprune.train.distill import distil
from vlprune.train.trainer import TrainConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 3})).eval()


@pytest.fixture
def batch(model, tokenizer):
    return Collate(tokenizer, model.config.vision)([ToyPairs(ToyWorld("train", image_size=32))[i] for i in range(4)])


def test_similarity_loss_by_hand():
    student = torch.eye(2)
    teacher = torch.zeros(2, 2)  # uniform targets: each row's SCE is log(1 + e) - 1/2
    assert float(similarity_loss(student, teacher)) == pytest.approx(math.log(1 + math.e) - 0.5)
    # a confident teacher: rows and columns each give -log_softmax(S)[target]
    teacher = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert float(similarity_loss(student, teacher)) == pytest.approx(math.log(1 + math.e) - 1, abs=1e-6)


def test_feature_loss_by_hand():
    student = {"vision": torch.tensor([[1.0, 0.0]]), "text": torch.tensor([[0.0, 2.0]])}
    teacher = {"vision": torch.zeros(1, 2), "text": torch.zeros(1, 2)}
    assert float(feature_loss(student, teacher)) == pytest.approx((0.5 + 2.0) / 2)
    assert float(feature_loss({"vision": student["vision"]}, teacher)) == pytest.approx(0.25)


def test_hidden_loss_follows_the_layer_map():
    student = {"vision": [torch.ones(1, 2, 2), torch.zeros(1, 2, 2)]}
    teacher = {"vision": [torch.zeros(1, 2, 2), torch.full((1, 2, 2), 100.0), torch.full((1, 2, 2), 3.0)]}
    assert float(hidden_loss(student, teacher, {"vision": [0, 2]})) == pytest.approx((1 + 9) / 2)


@torch.no_grad()
def test_objective_of_an_unchanged_student_is_itc_plus_self_similarity(model, batch):
    out = DistillObjective(copy.deepcopy(model))(model, batch, None)
    assert float(out["feat"]) == 0 and float(out["hidn"]) == 0
    logits = model.logit_scale.exp() * model.encode_image(batch["pixel_values"], normalize=True) @ \
        model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True).T
    assert float(out["sim"]) == pytest.approx(float(similarity_loss(logits, logits)), rel=1e-6)
    assert float(out["itc"]) == pytest.approx(float(itc_loss(*model(batch["pixel_values"], batch["input_ids"],
                                                                      batch["attention_mask"])[:2],
                                                          model.logit_scale)), rel=1e-6)
    assert float(out["loss"]) == pytest.approx(float(out["itc"] + out["sim"]), rel=1e-6)


def test_objective_maps_pruned_layers_to_their_teacher_layers(model, batch):
    student = prune(model, PrunePlan({"vision": TowerPlan(layers=(1,))}))
    with torch.no_grad():
        for block in student.visual.blocks:  # perturb so that every term is non-zero
            block.mlp.fc2.bias += 0.1
    out = DistillObjective(model, towers=("vision",), alpha=0, beta=0, gamma=1)(student, batch, None)
    hidden_s, hidden_t = [], []
    for net, store in ((student, hidden_s), (model, hidden_t)):
        net.visual.blocks[0].register_forward_hook(lambda m, i, o, store=store: store.append(o.x))
        net.visual.blocks[-1].register_forward_hook(lambda m, i, o, store=store: store.append(o.x))
        net.encode_image(batch["pixel_values"])
    expected = (torch.nn.functional.mse_loss(hidden_s[0], hidden_t[0]) +
                torch.nn.functional.mse_loss(hidden_s[1], hidden_t[1])) / 2
    assert float(out["hidn"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(out["itc"] + out["hidn"]), rel=1e-6)


def test_a_student_from_another_model_is_refused(model, batch):
    other = vlprune.build_model(tiny_clip_config(vision={"num_layers": 3, "layer_map": (0, 5, 6)}))
    with pytest.raises(ValueError, match="layer_map"):
        DistillObjective(model, towers=("vision",))(other, batch, None)


def test_short_distillation_trains_only_the_pruned_tower(model, tmp_path, tokenizer):
    student = prune(model, PrunePlan({"vision": TowerPlan(heads={0: (0, 1)}, layers=(2,))}))
    text_before = copy.deepcopy(student.text.state_dict())
    vision_before = copy.deepcopy(student.visual.state_dict())
    teacher_before = copy.deepcopy(model.state_dict())
    metrics = distil(student, model, ToyPairs(ToyWorld("train", image_size=32, size=64)),
                     Collate(tokenizer, model.config.vision), TrainConfig(steps=2, batch_size=8, lr=1e-3),
                     tmp_path / "run", towers=("vision",), progress=False)
    assert {"itc", "sim", "feat", "hidn", "loss"} <= set(metrics) and math.isfinite(metrics["loss"])
    assert all(torch.equal(v, student.text.state_dict()[k]) for k, v in text_before.items())
    assert any(not torch.equal(v, student.visual.state_dict()[k]) for k, v in vision_before.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.requires_grad for p in student.parameters()) and not student.training
