"""SmartTrim's training pieces on hand-computed cases: curriculum, cost loss, self-distillation, config errors,
gradient head importance, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from vlprune.config import ConfigError
from vlprune.method_registry import method_config
from vlprune.trim import SmartTrim, SmartTrimConfig
from vlprune.trim.io import load_trimmed, save_trimmed
from vlprune.trim.losses import cost_loss, keep_ratio, self_distillation
from vlprune.trim.michel import select_heads
from vlprune.trim.schedule import curriculum_target


def test_curriculum_goes_linearly_from_one_to_the_target():
    assert curriculum_target(0.5, 0, 100, 0.4) == 1.0
    assert curriculum_target(0.5, 20, 100, 0.4) == pytest.approx(0.75)
    assert curriculum_target(0.5, 40, 100, 0.4) == pytest.approx(0.5)
    assert curriculum_target(0.5, 90, 100, 0.4) == pytest.approx(0.5)
    assert curriculum_target(0.5, 1, 100, 0.0) == 0.5  # no curriculum


def test_curriculum_rejects_steps_outside_training():
    with pytest.raises(ValueError, match="step=101"):
        curriculum_target(0.5, 101, 100, 0.5)


def test_cost_loss_by_hand():
    keep = torch.tensor([[1.0, 0.0, 0.5, 0.9]])
    valid = torch.tensor([[True, True, True, False]])
    assert keep_ratio(keep, valid) == pytest.approx(0.5)
    loss = cost_loss({"tokens:vision": torch.tensor(0.5), "heads:vision": torch.tensor(1.0)},
                     {"tokens:vision": 0.3, "heads:vision": 0.8})
    assert float(loss) == pytest.approx(((0.5 - 0.3) ** 2 + (1.0 - 0.8) ** 2) / 2)


def test_cost_loss_needs_a_target_per_module():
    with pytest.raises(ValueError, match="targets"):
        cost_loss({"tokens:vision": torch.tensor(0.5)}, {"tokens:text": 0.3})


def test_self_distillation_by_hand():
    trimmed, full = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    p, q = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5])
    expected = 1.5 + float((p * (p / q).log()).sum())
    assert float(self_distillation(trimmed, full, torch.tensor(1.5))) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("field,value", [("target_vision", 0.0), ("target_text", 1.5), ("target_heads", -0.2)])
def test_bad_target_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"SmartTrimConfig\.{field}={value}.*\(0, 1\]"):
        SmartTrimConfig(**{field: value})


def test_config_round_trip_and_registry(tmp_path):
    config = SmartTrimConfig(target_vision=0.4, heads="fixed", fixed_heads={"vision.0": [1, 2]})
    config.save(tmp_path / "c.json")
    assert SmartTrimConfig.load(tmp_path / "c.json") == config
    assert method_config("smarttrim", ("adaptive",), target_text=0.6).target_text == 0.6
    with pytest.raises(ConfigError, match="unknown method 'dynamicvit'"):
        method_config("dynamicvit", ("adaptive",))
    with pytest.raises(ConfigError, match="unknown field"):
        method_config("smarttrim", ("adaptive",), target_audio=0.5)


def test_clip_models_are_refused(clip_model):
    with pytest.raises(ConfigError, match="fusion"):
        SmartTrim(clip_model, SmartTrimConfig())


def test_targets_follow_the_curriculum(fusion_model):
    trim = SmartTrim(fusion_model, SmartTrimConfig(target_vision=0.5, curriculum=0.5))
    assert trim.targets(0, 10)["tokens:vision"] == 1.0
    assert trim.targets(5, 10)["tokens:vision"] == pytest.approx(0.5)
    assert trim.targets()["heads:text.cross"] == 0.8


def test_select_heads_per_layer_and_model():
    importance = {"a": torch.tensor([0.1, 0.9, 0.5, 0.2]), "b": torch.tensor([0.8, 0.7, 0.05, 0.01])}
    assert select_heads(importance, 0.5, "layer") == {"a": (1, 2), "b": (0, 1)}
    assert select_heads(importance, 0.25, "model") == {"a": (1,), "b": (0,)}
    assert select_heads(importance, 0.375, "model") == {"a": (1,), "b": (0, 1)}


def test_save_load_round_trip(fusion_model, tokenizer, tmp_path):
    trim = SmartTrim(fusion_model, SmartTrimConfig(target_vision=0.4))
    with torch.no_grad():
        for p in trim.trimmers.parameters():
            p.normal_()
    loaded = load_trimmed(save_trimmed(trim, tmp_path / "m", tokenizer))
    assert loaded.config == trim.config
    for (k, a), (_, b) in zip(trim.trimmers.state_dict().items(), loaded.trimmers.state_dict().items()):
        assert torch.equal(a, b), k
