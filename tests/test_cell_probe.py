"""Cell probe: a linear read-out of what each occupied cell holds, from pooled patch tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers.tiny import tiny_clip_config
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.cell_probe import cell_probe_accuracy, occupied_cell_features


class _PatchColours(torch.nn.Module):
    """An 'image tower' whose patch tokens are each patch's mean RGB (times ``gain``): colour is in the tokens."""

    def __init__(self, gain: float):
        super().__init__()
        self.config = tiny_clip_config(vision={"image_size": 64, "patch_size": 8})
        self.gain = gain

    def visual(self, pixels: torch.Tensor) -> SimpleNamespace:
        patches = F.avg_pool2d(pixels, 8).flatten(2).transpose(1, 2) * self.gain  # (B, 64, 3)
        return SimpleNamespace(x=torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1))


def test_features_are_one_row_per_occupied_cell():
    world = ToyWorld("val", size=20)
    features, labels = occupied_cell_features(_PatchColours(1.0), world, 20)
    assert len(features) == len(labels) == sum(len(world.scene(i).objects) for i in range(20))
    assert labels.shape[1] == 3 and (labels > 0).all()


def test_probe_reads_colour_from_tokens_that_carry_it_and_nothing_from_blank_tokens():
    train, val = ToyWorld("train", size=300), ToyWorld("val", size=200)
    seeing = cell_probe_accuracy(_PatchColours(1.0), train, val, 300, 200, steps=200)
    blind = cell_probe_accuracy(_PatchColours(0.0), train, val, 300, 200, steps=200)
    assert seeing["probe_colour"] > 0.6  # chance 1/8; a cell's mean RGB mixes object and background
    _, labels = occupied_cell_features(_PatchColours(0.0), val, 200)
    most_common = max((labels[:, 0] == c).float().mean().item() for c in labels[:, 0].unique())
    assert blind["probe_colour"] <= most_common + 1e-6
    # the shape probe split by object size: its two parts average back to the whole, weighted by cell counts
    small = (labels[:, 2] == 1).float().mean().item()
    whole = small * seeing["probe_shape_small"] + (1 - small) * seeing["probe_shape_big"]
    assert whole == pytest.approx(seeing["probe_shape"], abs=1e-6)


def test_probe_rejects_a_patch_grid_that_does_not_split_into_cells():
    model = _PatchColours(1.0)
    model.config = tiny_clip_config(vision={"image_size": 40, "patch_size": 8})
    with pytest.raises(ValueError, match="the cell probe pools patches into a 4x4 grid of cells"):
        occupied_cell_features(model, ToyWorld("val", size=4), 4)
