"""Token-keep maps read the patches each token covers after every reducing block."""

import numpy as np
import pytest
import torch

import vlprune
from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.reduce import ELIPConfig, EViTConfig, ToMeConfig
from vlprune.report.tokens import keep_map_figure, keep_maps, overlay


@pytest.fixture
def pixels_and_images(clip_model):
    world = ToyWorld("val", image_size=32)
    images = [world.image(i) for i in range(3)]
    return to_pixels(images, clip_model.config.vision), images


def test_evit_map_keeps_the_scheduled_count_and_fuses_the_rest(clip_model, pixels_and_images):
    pixels, _ = pixels_and_images
    vlprune.apply(clip_model, EViTConfig(layers=(1,), keep_ratio=0.5))
    maps = keep_maps(clip_model, pixels)
    assert [[m.layer for m in steps] for steps in maps] == [[1]] * 3
    step = maps[0][0]
    assert step.tokens == 1 + 8 + 1 and step.alone.sum() == 8  # [CLS] + 8 kept of 16 + one fused token
    assert len(set(step.owner[~step.alone].tolist())) == 1  # every dropped patch went to the fused token
    assert not clip_model.visual.trace_source  # tracing was only on for the call


def test_tome_groups_partition_the_patches_and_prune_only_drops(clip_model, pixels_and_images):
    pixels, images = pixels_and_images
    vlprune.apply(clip_model, ToMeConfig(r=3))
    steps = keep_maps(clip_model, pixels)[1]
    assert [s.tokens for s in steps] == [14, 11]
    assert len(np.unique(steps[-1].owner)) == 10 and (steps[-1].owner >= 0).all()
    vlprune.apply(clip_model, ELIPConfig(stages=(1, 1), keep=(0.5,), merge=False))
    dropped = keep_maps(clip_model, pixels, guide=torch.zeros(3, clip_model.config.vision.width))[0][-1]
    assert (dropped.owner == -1).sum() == 8 and dropped.alone.sum() == 8
    shown = overlay(images[0], dropped)
    assert shown.shape == images[0].shape and not np.array_equal(shown, images[0])


def test_figure_has_a_row_per_method_plus_images(clip_model, pixels_and_images):
    pixels, images = pixels_and_images
    vlprune.apply(clip_model, EViTConfig(layers=(0,), keep_ratio=0.5))
    fig = keep_map_figure(images, {"evit": keep_maps(clip_model, pixels), "none": [[], [], []]})
    assert len(fig.axes) == 3 * 3
