"""Training cost of a method: analytic forward+backward GFLOPs, and a measured step that leaves weights alone."""

import pytest
import torch

import vlprune
from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.train_cost import saved_activation_mb, training_gflops_per_pair, training_step_cost
from vlprune.models.flops import model_gflops
from vlprune.reduce import ELIPConfig, EViTConfig
from vlprune.train.objectives import Objective


def test_training_gflops_count_backward_twice_and_no_grad_passes_once(clip_model):
    config = clip_model.config
    forward = sum(model_gflops(config, 40).values())
    assert training_gflops_per_pair(clip_model, None, 40) == pytest.approx(3 * forward)
    faithful = ELIPConfig(stages=(1, 1), keep=(0.5,), mode="faithful")
    schedule = faithful.schedule(config.vision)
    graded = sum(model_gflops(config, 40, schedule).values())
    extra = model_gflops(config, 40, schedule, faithful.extra_macs(config.vision))["vision_gflops"] - \
        model_gflops(config, 40, schedule)["vision_gflops"]
    assert extra > 0
    assert training_gflops_per_pair(clip_model, faithful, 40) == pytest.approx(3 * graded + extra)
    assert training_gflops_per_pair(clip_model, EViTConfig(layers=(0,), keep_ratio=0.5), 40) < 3 * forward


def test_step_cost_measures_without_changing_weights(clip_model, tokenizer):
    world = ToyWorld("train", image_size=32, size=8)
    batch = Collate(tokenizer, clip_model.config.vision)([ToyPairs(world)[i] for i in range(8)])
    before = {k: v.clone() for k, v in clip_model.state_dict().items()}
    cost = training_step_cost(clip_model, ELIPConfig(stages=(1, 1), keep=(0.5,)), batch, Objective({"itc": 1.0}),
                              warmup=0, iters=1)
    assert cost["sec_per_step"] > 0 and cost["pairs"] == 8 and cost["train_gflops_per_pair"] > 0
    base = training_step_cost(clip_model, None, batch, Objective({"itc": 1.0}), warmup=0, iters=1)
    assert 0 < cost["activation_mb"] < base["activation_mb"]  # fewer tokens after the stage start
    assert all(torch.equal(before[k], v) for k, v in clip_model.state_dict().items())
    assert clip_model.reduction is None and all(p.grad is None for p in clip_model.parameters())
    vlprune.apply(clip_model, None)


def test_saved_activations_count_each_storage_once_and_scale_with_batch():
    weight = torch.randn(64, 64, requires_grad=True)

    def loss_of(batch: int):
        return lambda: (torch.randn(batch, 64) @ weight).tanh().sum()

    _, small = saved_activation_mb(loss_of(100))
    _, large = saved_activation_mb(loss_of(200))
    assert large > small > 0
    assert small == pytest.approx(2 * 100 * 64 * 4 / 2**20)  # the input (for the weight grad) and tanh output
