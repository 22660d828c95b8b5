"""Masked and physical structured pruning: nothing removed is the base model, masked == physical, the smaller
model saves and loads, bad plans fail with clear messages."""

from __future__ import annotations

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.structured import PrunePlan, TowerPlan, apply_masks, clear_masks, masked, prune
from vlprune.structured.towers import begin, encode, finish, run

PLAN = PrunePlan({"vision": TowerPlan(heads={0: (1, 3), 2: (0, 1, 2, 3)}, neurons={1: (0, 5, 63), 2: (7,)},
                                      layers=(1,)),
                  "text": TowerPlan(heads={1: (2,)}, neurons={0: tuple(range(64))})})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 3})).eval()


@pytest.fixture
def batch(tokenizer):
    ids, mask = tokenizer(["a big red circle at top left", "a small blue square", "a big green cross and a small "
                                                                                  "white diamond at bottom right"])
    return {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
            "input_ids": ids, "attention_mask": mask}


def _embeddings(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return (model.encode_image(batch["pixel_values"], normalize=True),
                model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True))


def test_removing_nothing_is_the_base_model(model, batch):
    base = _embeddings(model, batch)
    empty = PrunePlan({"vision": TowerPlan(), "text": TowerPlan()})
    with masked(model, empty):
        assert all(torch.equal(a, b) for a, b in zip(base, _embeddings(model, batch)))
    same = prune(model, empty)
    assert same.num_params() == model.num_params()
    assert all(torch.equal(a, b) for a, b in zip(base, _embeddings(same, batch)))


def test_masked_equals_physical_and_the_model_shrinks(model, batch):
    with masked(model, PLAN):
        soft = _embeddings(model, batch)
    hard_model = prune(model, PLAN)
    hard = _embeddings(hard_model, batch)
    for a, b in zip(soft, hard):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert hard_model.num_params() < model.num_params()
    vision = hard_model.config.vision
    assert list(vision.num_heads) == [2, 0] and list(vision.intermediate_size) == [64, 63]
    assert list(vision.layer_map) == [0, 2]
    assert list(hard_model.config.text.intermediate_size) == [0, 64]
    assert not torch.allclose(soft[0], _embeddings(model, batch)[0])  # masks are cleared on exit


def test_masks_can_be_cleared(model, batch):
    base = _embeddings(model, batch)
    apply_masks(model, PLAN)
    assert not torch.allclose(base[0], _embeddings(model, batch)[0])
    clear_masks(model)
    assert all(torch.equal(a, b) for a, b in zip(base, _embeddings(model, batch)))


def test_pruned_model_save_load_round_trip(model, batch, tmp_path):
    small = prune(model, PLAN)
    loaded = vlprune.load(vlprune.save(small, tmp_path / "small"))
    assert loaded.config == small.config
    for key, value in small.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert all(torch.equal(a, b) for a, b in zip(_embeddings(small, batch), _embeddings(loaded, batch)))


def test_pruning_twice_maps_layers_to_the_original(model):
    once = prune(model, PrunePlan({"vision": TowerPlan(layers=(0,))}))
    twice = prune(once, PrunePlan({"vision": TowerPlan(layers=(1,))}))
    assert list(twice.config.vision.layer_map) == [1]


def test_tower_pieces_equal_the_model_forward(model, batch):
    image, text = _embeddings(model, batch)
    with torch.no_grad():
        torch.testing.assert_close(encode(model, "vision", [batch]), image, atol=0, rtol=0)
        torch.testing.assert_close(encode(model, "text", [batch]), text, atol=0, rtol=0)
        hidden: list[torch.Tensor] = []
        part = run(model, "vision", run(model, "vision", begin(model, "vision", batch), 0, 1, hidden), 1,
                   hidden=hidden)
        torch.testing.assert_close(finish(model, "vision", part, batch), image, atol=0, rtol=0)
    assert len(hidden) == 3


@pytest.mark.parametrize("plan, words", [
    (PrunePlan({"vision": TowerPlan(heads={0: (4,)})}), "vision.heads[0]"),
    (PrunePlan({"vision": TowerPlan(layers=(3,))}), "vision.layers"),
    (PrunePlan({"text": TowerPlan(neurons={0: (1, 1)})}), "distinct"),
])
def test_bad_plans_name_the_field(model, plan, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        prune(model, plan)


def test_unknown_tower_and_fusion_models_are_refused(model, fusion_model):
    with pytest.raises(ValueError, match="unknown tower"):
        PrunePlan.from_dict({"audio": {}})
    with pytest.raises(ValueError, match="kind='clip'"):
        prune(fusion_model, PrunePlan())


def test_plan_json_round_trip():
    assert PrunePlan.from_dict(PLAN.to_dict()) == PLAN
