"""Every token method with its defaults works on every bundled and registered model and saves compute there
(issue 28: ``--method tome`` alone used to be refused on toy-clip)."""

from __future__ import annotations

import pytest
import torch

import vlprune
from vlprune.eval.bench import random_text_guide
from vlprune.method_registry import list_methods, method_config
from vlprune.models.io import create_model
from vlprune.reduce.base import method_gflops, vision_gflops
from vlprune.registry import bundled_dir, list_models


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    name = request.param
    return vlprune.load(name) if bundled_dir(name) else create_model(name).eval()


@pytest.mark.parametrize("method", list_methods())
def test_default_config_runs_and_cuts_gflops(model, method):
    config = method_config(method)
    vlprune.apply(model, config)
    try:
        vision = model.config.vision
        pixels = torch.randn(1, vision.channels, vision.image_size, vision.image_size)
        with torch.inference_mode():
            emb = model.encode_image(pixels, guide=random_text_guide(model, 1, pixels.device))
        assert emb.shape == (1, model.config.embed_dim) and torch.isfinite(emb).all()
        base = method_gflops(model.config, None)["vision_gflops"]
        if method != "elip":  # ELIP's default is its faithful (pre-training) mode: the CLI warns about its cost
            assert vision_gflops(model) < base, method
    finally:
        vlprune.apply(model, None)


def test_tome_default_scales_to_the_tower():
    from vlprune.reduce import ToMeConfig
    from vlprune.registry import model_config

    assert set(ToMeConfig().per_layer(model_config("vit-b16-clip").vision)) == {8}  # ToMe's own setting
    assert set(ToMeConfig().per_layer(model_config("toy-clip").vision)) == {2}
    assert ToMeConfig(r=3).per_layer(model_config("toy-clip").vision) == (3,) * 12
