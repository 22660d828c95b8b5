"""Scene supervision (per-cell attribute probes) and the attribute-binding probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune.data.cells import target_cell_attention
from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import (
    ANSWERS,
    COLOURS,
    SHAPES,
    SIZES,
    Mention,
    Scene,
    ToyObject,
    ToyWorld,
    cell_targets,
    colour_targets,
)
from vlprune.eval.binding import ATTRIBUTES, binding_accuracy, changed_attribute
from vlprune.eval.grounding import question_cell_attention, question_object_probe
from vlprune.train.objectives import Objective
from vlprune.train.scene import SceneProbes, grounding_loss
from vlprune.train.trainer import TrainContext


def _scene() -> Scene:
    red = ToyObject("red", "circle", "big", 0)
    blue = ToyObject("blue", "cross", "small", 13)
    green = ToyObject("green", "square", "small", 6)
    return Scene((red, blue, green), (Mention(red, True), Mention(blue, False)), "q", "red", "colour", red.cell,
                 (0, 0, 0), 1)


def test_cell_targets_say_what_is_where():
    image = cell_targets(_scene())
    assert image.shape == (3, 16)
    assert set(np.flatnonzero(image[0])) == {0, 6, 13}
    assert tuple(image[:, 0]) == (list(COLOURS).index("red") + 1, SHAPES.index("circle") + 1, SIZES.index("big") + 1)
    assert tuple(image[:, 13]) == (list(COLOURS).index("blue") + 1, SHAPES.index("cross") + 1, 1)


def test_colour_targets_bind_place_shape_and_size_to_each_colour():
    image, caption, known = colour_targets(_scene())
    red, blue, green = (list(COLOURS).index(c) for c in ("red", "blue", "green"))
    shape_at, size_at = 8, 8 + len(SHAPES)
    # red circle, big, at cell 0 = row 0, column 0; blue cross, small, at cell 13 = row 3, column 1
    assert set(np.flatnonzero(image[red])) == {0, 4, shape_at + SHAPES.index("circle"), size_at + 1}
    assert set(np.flatnonzero(image[blue])) == {3, 4 + 1, shape_at + SHAPES.index("cross"), size_at}
    assert image.sum() == 12  # three objects x four entries
    # the caption places red, names the blue cross without a place (left open), says nothing of green
    assert np.array_equal(caption[red], image[red]) and not caption[green].any()
    assert set(np.flatnonzero(caption[blue])) == {shape_at + SHAPES.index("cross"), size_at}
    assert not known[blue, :8].any() and known[blue, 8:].all() and known[red].all() and known[green].all()


def test_cell_features_average_the_patches_of_each_cell():
    config = tiny_clip_config(vision={"image_size": 64, "patch_size": 8})  # 8x8 patches -> 2x2 per cell
    probes = SceneProbes(vlprune.build_model(config), config)
    patches = torch.arange(64, dtype=torch.float32).reshape(1, 64, 1).expand(1, 64, 3)
    cells = probes.cell_features(patches)
    assert cells.shape == (1, 16, 3)
    # cell 0 covers patches 0, 1, 8, 9; cell 5 (row 1, col 1) covers 18, 19, 26, 27
    assert cells[0, 0, 0].item() == pytest.approx((0 + 1 + 8 + 9) / 4)
    assert cells[0, 5, 0].item() == pytest.approx((18 + 19 + 26 + 27) / 4)


def test_scene_probes_reject_a_patch_grid_that_does_not_split_into_cells():
    config = tiny_clip_config(vision={"image_size": 40, "patch_size": 8})  # 5x5 patches
    with pytest.raises(ValueError, match="4x4 grid of cells"):
        SceneProbes(vlprune.build_model(config), config)


def _batch(tokenizer, config, n=8):
    pairs = ToyPairs(ToyWorld("train", image_size=config.vision.image_size, size=n))
    return Collate(tokenizer, config.vision)([pairs[i] for i in range(n)])


def _ctx():
    return TrainContext(step=1, rank=0, world_size=1, generator=torch.Generator().manual_seed(0),
                        device=torch.device("cpu"), micro_step=0)


def test_scene_task_needs_the_probes_and_the_probes_need_the_task(tokenizer):
    config = tiny_clip_config()
    model = vlprune.build_model(config)
    batch = _batch(tokenizer, config)
    with pytest.raises(ValueError, match="SceneProbes"):
        Objective({"itc": 1.0, "scene": 1.0})(model, batch, _ctx())
    with pytest.raises(ValueError, match="SceneProbes"):
        Objective({"itc": 1.0})(SceneProbes(model, config), batch, _ctx())


def test_scene_loss_trains_the_towers_and_is_learnable(tokenizer):
    torch.manual_seed(0)
    config = tiny_clip_config()
    probes = SceneProbes(vlprune.build_model(config), config)
    objective = Objective({"scene": 1.0})
    batch = _batch(tokenizer, config)
    out = objective(probes, batch, _ctx())
    assert {"scene_cells", "scene_where", "scene_image", "scene_text"} <= set(out)
    out["loss"].backward()
    assert probes.model.visual.blocks[0].attn.q.weight.grad.abs().sum() > 0
    assert probes.model.text.blocks[0].attn.q.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(probes.parameters(), lr=3e-3)
    first = out["loss"].item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = objective(probes, batch, _ctx())["loss"]
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.6 * first


def _cell_logits(one_object_cell: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-probe logits that are sure of "empty" everywhere and uniform on the one occupied cell, and targets with
    a red circle, big, in ``one_object_cell``."""
    from vlprune.data.toyworld import ATTRIBUTE_CLASSES

    targets = torch.zeros(batch, 3, 16, dtype=torch.long)
    targets[:, :, one_object_cell] = torch.tensor([1, 2, 2])
    parts = []
    for classes in ATTRIBUTE_CLASSES.values():
        part = torch.zeros(batch, 16, classes)
        part[:, :, 0] = 60.0  # "empty" with certainty ...
        part[:, one_object_cell] = 0.0  # ... except the occupied cell: uniform
        parts.append(part)
    return torch.cat(parts, dim=-1), targets


def test_balanced_scene_loss_weighs_the_occupied_cells_as_much_as_the_empty_ones():
    from vlprune.data.toyworld import ATTRIBUTE_CLASSES

    config = tiny_clip_config(vision={"image_size": 64, "patch_size": 8})
    model = vlprune.build_model(config)
    logits, targets = _cell_logits(5)
    uniform = sum(np.log(c) for c in ATTRIBUTE_CLASSES.values()) / 3  # mean over attributes of log(classes)
    # mean: the one uncertain cell is 1/16 of the loss; balanced: the occupied cells' mean counts in full
    assert SceneProbes(model, config)._attribute_loss(logits, targets).item() == pytest.approx(uniform / 16, rel=1e-5)
    balanced = SceneProbes(model, config, "balanced")
    assert balanced._attribute_loss(logits, targets).item() == pytest.approx(uniform, rel=1e-5)
    # every entry uniform: both sides add log(classes)
    assert balanced._attribute_loss(torch.zeros_like(logits), targets).item() == pytest.approx(2 * uniform, rel=1e-5)
    with pytest.raises(ValueError, match="scene loss 'sum'"):
        SceneProbes(model, config, "sum")


def test_balanced_colour_probe_loss_averages_positives_and_negatives_apart(tokenizer):
    config = tiny_clip_config(vision={"image_size": 64, "patch_size": 8})
    balanced = SceneProbes(vlprune.build_model(config), config, "balanced")
    targets = torch.zeros(1, 10)
    targets[0, 0] = 1.0
    logits = torch.full((1, 10), -60.0)  # right on the nine negatives, wrong on the positive
    expected = torch.nn.functional.softplus(torch.tensor(60.0)).item()
    assert balanced._bce(logits, targets).item() == pytest.approx(expected)
    known = torch.ones(1, 10, dtype=torch.bool)
    known[0, 0] = False  # the positive left open: only the (right) negatives count
    assert balanced._bce(logits, targets, known).item() == pytest.approx(0.0, abs=1e-6)


def test_changed_attribute_names_what_the_twin_changed():
    world = ToyWorld("val", size=50)
    seen = {changed_attribute(world.scene(i), world.twin(i, v)) for i in range(50) for v in range(2)}
    assert seen == set(ATTRIBUTES)
    with pytest.raises(ValueError, match="more than one object"):
        changed_attribute(world.scene(0), world.scene(1))


class _ColourBag(torch.nn.Module):
    """Embeds images and captions as the set of colours present: a model that learned colour only."""

    def __init__(self, config, tokenizer):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.colour_ids = [tokenizer.ids[c] for c in COLOURS]
        mean = torch.tensor(config.vision.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(config.vision.image_std).view(1, 3, 1, 1)
        self.mean, self.std = mean, std

    def encode_text(self, ids, mask=None, normalize=False):
        present = torch.stack([(ids == i).any(dim=1) for i in self.colour_ids], dim=1).float()
        return torch.nn.functional.normalize(present + 1e-3, dim=-1)

    def encode_image(self, pixels, normalize=False):
        rgb = (pixels * self.std + self.mean) * 255
        present = [((rgb - torch.tensor(c).view(1, 3, 1, 1)).abs().amax(dim=1) < 22).flatten(1).sum(1) > 4
                   for c in COLOURS.values()]
        return torch.nn.functional.normalize(torch.stack(present, dim=1).float() + 1e-3, dim=-1)


def test_binding_probe_exposes_a_colour_only_model(tokenizer):
    config = tiny_clip_config(vision={"image_size": 64})
    scores = binding_accuracy(_ColourBag(config, tokenizer), tokenizer, ToyWorld("val", size=200), count=200)
    assert scores["binding_colour"] > 0.9
    for attribute in ("shape", "size", "cell"):  # same colours -> tied scores -> counted as failures
        assert scores[f"binding_{attribute}"] < 0.1
    assert scores["binding_mean"] == pytest.approx(np.mean([scores[f"binding_{a}"] for a in ATTRIBUTES]))


def test_target_cell_attention_is_the_share_on_the_patches_of_the_question_cell():
    patch_grid = 8  # 2x2 patches per cell; cell 5 (row 1, column 1) holds patches at rows 2-3, columns 2-3
    on_cell_5 = torch.zeros(1, 2, 1 + patch_grid**2)
    for r, c in ((2, 2), (2, 3), (3, 2), (3, 3)):
        on_cell_5[..., 1 + r * patch_grid + c] = 0.25
    uniform = torch.full((1, 2, 1 + patch_grid**2), 1 / (1 + patch_grid**2))
    attn = [torch.cat([on_cell_5, on_cell_5, uniform, on_cell_5])]
    cells = torch.tensor([5, 6, 5, -1])
    share = target_cell_attention(attn, cells, patch_grid)
    assert torch.allclose(share, torch.tensor([1.0, 0.0, 4 / 65, 0.0]))
    # the count / exists row (cell -1) is left out; the cell-6 row, with no attention on its cell, costs -log 1e-6
    loss = grounding_loss(share, cells)
    assert torch.isclose(loss, -(torch.log(torch.tensor(1e-6)) + torch.log(torch.tensor(4 / 65))) / 3)
    with pytest.raises(ValueError, match="every patch token"):
        target_cell_attention([on_cell_5[:, :, :10]], cells[:1], patch_grid)


def test_ground_task_teaches_the_fusion_layers_to_look_at_the_question_cell(tokenizer):
    torch.manual_seed(0)
    config = tiny_fusion_config(num_answers=len(ANSWERS))
    model = vlprune.build_model(config)
    batch = _batch(tokenizer, config, n=16)
    assert (batch["question_cell"] >= 0).any() and (batch["question_cell"] < 16).all()
    with pytest.raises(ValueError, match="use them with 'vqa'"):
        Objective({"itc": 1.0, "ground": 1.0})(model, batch, _ctx())
    with pytest.raises(ValueError, match="use it with 'scene'"):
        Objective({"vqa": 1.0, "ground_object": 1.0})(model, batch, _ctx())
    # recording the cross-attention (math path) leaves the fused tokens as they are
    image = model.visual(batch["pixel_values"])
    question = model.text(batch["question_ids"], batch["question_mask"])
    recorded: dict[str, torch.Tensor] = {}
    assert torch.allclose(model.fuse(question, image, recorded).x, model.fuse(question, image).x, atol=1e-6)
    assert set(recorded) == {"text.2"} and recorded["text.2"].shape == (16, 4, image.x.shape[1])
    probes = SceneProbes(model, model.config)
    objective = Objective({"vqa": 1.0, "ground": 1.0, "ground_object": 1.0, "scene": 1.0})
    out = objective(probes, batch, _ctx())
    first_share, first_object = out["ground_share"].item(), out["ground_object"].item()
    optimizer = torch.optim.Adam(probes.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        out = objective(probes, batch, _ctx())
        out["loss"].backward()
        optimizer.step()
    assert out["ground_share"].item() > max(0.5, 3 * first_share)
    assert out["ground_object"].item() < 0.5 * first_object


def test_question_cell_attention_of_a_model_that_looks_everywhere_is_the_uniform_share(tokenizer):
    torch.manual_seed(0)
    model = vlprune.build_model(tiny_fusion_config(num_answers=len(ANSWERS)))
    cross = model.text.blocks[2].cross_attn
    torch.nn.init.zeros_(cross.k.weight)
    torch.nn.init.zeros_(cross.k.bias)  # every key alike: attention uniform over [CLS] + 16 patches (1 per cell)
    shares = question_cell_attention(model, tokenizer, ToyWorld("val", image_size=32), 60, batch_size=25)
    assert {"colour", "all"} <= set(shares) <= {"colour", "shape", "size", "where", "all"}
    assert all(abs(share - 1 / 17) < 1e-5 for share in shares.values())
    with pytest.raises(ValueError, match="fusion model"):
        question_cell_attention(vlprune.build_model(tiny_clip_config()), tokenizer, ToyWorld("val"), 10)


def test_question_object_probe_reads_shape_where_it_is_and_not_where_it_is_not(tokenizer):
    """A random tiny model's cell tokens carry the pixels of the object (shape above chance); with the cross-attention
    values zeroed, its fused [CLS] depends on the question alone and knows nothing of the shape."""
    torch.manual_seed(0)
    model = vlprune.build_model(tiny_fusion_config(num_answers=len(ANSWERS), vision={"image_size": 64}))
    torch.nn.init.zeros_(model.text.blocks[2].cross_attn.v.weight)
    torch.nn.init.zeros_(model.text.blocks[2].cross_attn.v.bias)
    probe = question_object_probe(model, tokenizer, ToyWorld("train"), ToyWorld("val"), 300, 200)
    assert probe["cell_shape"] > 0.3 > probe["fused_shape"]


def test_object_loss_reads_what_and_where_the_question_object_is():
    probes = SceneProbes(vlprune.build_model(tiny_fusion_config()), tiny_fusion_config())
    image_cells = torch.zeros(1, 3, 16, dtype=torch.long)
    image_cells[0, :, 6] = torch.tensor([3, 2, 1])  # colour 3, shape 2, size 1 (1-based codes) at row 1, column 2
    colour, shape, size = (9, 6, 3)  # ATTRIBUTE_CLASSES: 8 + 1, 5 + 1, 2 + 1
    truth = [3, colour + 2, colour + shape + 1, colour + shape + size + 1, colour + shape + size + 4 + 2]
    torch.nn.init.zeros_(probes.fused_object.weight)
    with torch.no_grad():
        probes.fused_object.bias.zero_()
        probes.fused_object.bias[truth] = 30.0
    fused = torch.randn(1, 32)
    assert probes.object_loss(fused, image_cells, torch.tensor([6])).item() < 1e-6
    assert probes.object_loss(fused, image_cells, torch.tensor([5])).item() > 10  # the empty cell next door
    none = probes.object_loss(fused, image_cells, torch.tensor([-1]))
    assert none.item() == 0 and none.requires_grad
    with pytest.raises(ValueError, match="fusion model"):
        SceneProbes(vlprune.build_model(tiny_clip_config()), tiny_clip_config()).object_loss(fused, image_cells,
                                                                                             torch.tensor([6]))
