"""The toy world: a pure function of (split, index), unambiguous enough to measure retrieval, with partial
captions, closed-vocabulary answers and a single-object zero-shot split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.tiny import tiny_vision
from vlprune.data.pairs import Collate, ToyPairs, to_pixels
from vlprune.data.toyworld import (
    ANSWERS,
    COLOURS,
    GRID,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    Mention,
    ToyObject,
    ToyWorld,
    ceiling,
    class_names,
    positives,
    toy_tokenizer,
)


def test_same_index_gives_identical_scene_and_image_bytes():
    a, b = ToyWorld("train"), ToyWorld("train")
    for index in (0, 7, 199_999):
        assert a.scene(index) == b.scene(index)
        assert a.image(index).tobytes() == b.image(index).tobytes()
    assert a.image(3).tobytes() == a.image(3).tobytes()  # no hidden state between calls


def test_splits_and_world_seeds_differ():
    scenes = {split: [ToyWorld(split).scene(i) for i in range(10)] for split in ("train", "val", "test")}
    assert scenes["train"] != scenes["val"] and scenes["val"] != scenes["test"] and scenes["train"] != scenes["test"]
    assert ToyWorld("val").image(0).tobytes() != ToyWorld("test").image(0).tobytes()
    assert ToyWorld("val", seed=1).scene(0) != ToyWorld("val").scene(0)
    # a smaller split is a prefix of the full one
    assert ToyWorld("val", size=5).scene(4) == ToyWorld("val").scene(4)


def test_val_ceiling_is_high():
    world = ToyWorld("val")
    result = ceiling(world, 300)
    assert result["image_retrieval_ceiling@1"] >= 0.95
    assert result["text_retrieval_ceiling@1"] >= 0.95
    truth = positives(world, 300)
    assert truth.shape == (300, 300) and truth.diagonal().all()  # every caption describes its own scene


def test_mentions_without_position_match_any_cell():
    obj = ToyObject("red", "circle", "big", cell=5)
    moved = ToyObject("red", "circle", "big", cell=6)
    assert Mention(obj, with_position=False).matches(moved)
    assert not Mention(obj, with_position=True).matches(moved)
    assert Mention(obj, with_position=True).matches(obj)
    assert not Mention(obj, False).matches(ToyObject("red", "circle", "small", cell=5))
    assert obj.where == "upper midleft" and obj.phrase() == "a big red circle at upper midleft"


def test_captions_mention_a_subset_of_the_objects():
    world = ToyWorld("train")
    partial = 0
    for i in range(200):
        scene = world.scene(i)
        mentioned = [m.obj for m in scene.mentions]
        assert 2 <= len(scene.objects) <= 4
        assert all(obj in scene.objects for obj in mentioned) and len(set(mentioned)) == len(mentioned)
        assert scene.described_by(scene.mentions)
        assert len(scene.mentions) >= min(2, len(scene.objects))
        partial += len(mentioned) < len(scene.objects)
        for m in scene.mentions:
            assert m.obj.phrase(m.with_position) in scene.caption
        assert len({o.cell for o in scene.objects}) == len(scene.objects)  # one object per cell
    assert partial > 20  # captions regularly leave objects out


def test_described_by_is_false_for_an_absent_object():
    scene = ToyWorld("val").scene(0)
    present = {(o.colour, o.shape, o.size) for o in scene.objects}
    absent = next(ToyObject(c, s, z, 0) for c in COLOURS for s in SHAPES for z in SIZES if (c, s, z) not in present)
    assert not scene.described_by((Mention(absent, False),))
    # one object cannot be claimed twice
    only = scene.objects[0]
    same = [o for o in scene.objects if (o.colour, o.shape, o.size) == (only.colour, only.shape, only.size)]
    assert scene.described_by(tuple(Mention(only, False) for _ in same))
    assert not scene.described_by(tuple(Mention(only, False) for _ in range(len(same) + 1)))


def test_every_answer_is_in_the_answer_vocabulary():
    world = ToyWorld("train")
    seen_types = set()
    for i in range(300):
        scene = world.scene(i)
        assert scene.answer in ANSWERS
        assert scene.question_type in QUESTION_TYPES
        seen_types.add(scene.question_type)
        if scene.question_type == "count":
            colour = scene.question.split()[2]
            assert int(scene.answer) == sum(o.colour == colour for o in scene.objects)
        if scene.question_type == "exists":
            _, _, _, colour, shape = scene.question.split()
            expected = any(o.colour == colour and o.shape == shape for o in scene.objects)
            assert scene.answer == ("yes" if expected else "no")
    assert seen_types == set(QUESTION_TYPES)
    assert len(set(ANSWERS)) == len(ANSWERS)


def test_zeroshot_split_has_one_object_and_a_valid_class():
    world = ToyWorld("zeroshot")
    names = class_names()
    assert len(names) == len(COLOURS) * len(SHAPES) and len(set(names)) == len(names)
    for i in range(30):
        scene = world.scene(i)
        assert len(scene.objects) == 1
        image, label = world.classification(i)
        obj = scene.objects[0]
        assert 0 <= label < len(names) and names[label] == f"{obj.colour} {obj.shape}"
        assert image.tobytes() == world.image(i).tobytes()


@pytest.mark.parametrize("image_size", [64, 32])
def test_images_are_uint8_and_objects_are_drawn(image_size):
    world = ToyWorld("val", image_size=image_size)
    image = world.image(0)
    assert image.shape == (image_size, image_size, 3) and image.dtype == np.uint8
    if image_size == 64:
        assert (image.shape[0] // 8) * (image.shape[1] // 8) >= 64  # patches at patch size 8
    scene = world.scene(0)
    cell = image_size // GRID
    for obj in scene.objects:  # the object's cell holds its colour (within the colour jitter)
        r, c = divmod(obj.cell, GRID)
        region = image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].reshape(-1, 3).astype(int)
        distance = np.abs(region - np.array(COLOURS[obj.colour])).max(axis=1)
        assert (distance <= 20).sum() >= 4, obj


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "dev"}, "split="),
    ({"image_size": 30}, "image_size="),
    ({"image_size": 16}, "image_size="),
    ({"min_objects": 0}, "min_objects="),
    ({"min_objects": 3, "max_objects": 2}, "min_objects="),
    ({"max_objects": 17}, "max_objects="),
    ({"omit_position_rate": 1.5}, "omit_position_rate="),
    ({"size": 0}, "size="),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyWorld(**kwargs)


def test_scene_index_out_of_range():
    world = ToyWorld("val", size=10)
    assert len(world) == 10
    with pytest.raises(IndexError, match="outside split"):
        world.scene(10)
    with pytest.raises(IndexError):
        world.scene(-1)


def test_all_text_is_in_the_tokenizer_vocabulary_and_fits():
    tokenizer = toy_tokenizer()
    for split in ("train", "val", "zeroshot"):
        world = ToyWorld(split)
        for i in range(100):
            scene = world.scene(i)
            for text in (scene.caption, scene.question):
                assert tokenizer.unk_id not in tokenizer.encode(text), text
    longest = " and ".join("a small purple triangle at bottom midright" for _ in range(4))
    assert len(tokenizer.encode(longest)) <= tokenizer.max_length
    for name in class_names():
        assert tokenizer.unk_id not in tokenizer.encode(f"a big {name}")


def test_pairs_and_collate(tokenizer):
    world = ToyWorld("train", image_size=32, size=8)
    pairs = ToyPairs(world)
    assert len(pairs) == 8
    item = pairs[3]
    assert item["caption"] == world.scene(3).caption and ANSWERS[item["answer"]] == world.scene(3).answer
    vision = tiny_vision()
    batch = Collate(tokenizer, vision)([pairs[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["input_ids"].shape == (4, 40)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    pixels = to_pixels([world.image(0)], vision)
    expected = (torch.from_numpy(world.image(0)).permute(2, 0, 1).float() / 255 - 0.48145466) / 0.26862954
    torch.testing.assert_close(pixels[0, 0], expected[0])


def _differences(a: ToyObject, b: ToyObject) -> list[str]:
    return [f for f in ("colour", "shape", "size", "cell") if getattr(a, f) != getattr(b, f)]


def test_twin_changes_one_attribute_of_one_mentioned_object_and_is_a_true_negative():
    world = ToyWorld("train")
    changed_attributes = set()
    for index in range(300):
        scene, twin = world.scene(index), world.twin(index)
        assert twin == world.twin(index)  # deterministic
        diffs = [(a, b) for a, b in zip(scene.objects, twin.objects, strict=True) if a != b]
        assert len(diffs) == 1
        before, after = diffs[0]
        assert len(_differences(before, after)) == 1
        changed_attributes |= set(_differences(before, after))
        assert before in {m.obj for m in scene.mentions} and after in {m.obj for m in twin.mentions}
        assert len({o.cell for o in twin.objects}) == len(twin.objects)
        assert not twin.described_by(scene.mentions) and not scene.described_by(twin.mentions)
        assert (twin.background, twin.seed) == (scene.background, scene.seed)
        assert twin.answer in ANSWERS
    assert changed_attributes == {"colour", "shape", "size", "cell"}


def test_a_caption_describes_its_twin_to_a_model_blind_to_the_changed_attribute():
    world = ToyWorld("train")
    for index in range(100):
        scene, twin = world.scene(index), world.twin(index)
        (before, after), = [(a, b) for a, b in zip(scene.objects, twin.objects, strict=True) if a != b]
        changed = _differences(before, after)[0]
        assert twin.described_by(scene.mentions, blind=(changed,)) and not twin.described_by(scene.mentions)


def test_blind_ceilings_are_lower_and_unknown_attributes_raise():
    world = ToyWorld("val")
    full, no_shape, no_shape_or_cell = (ceiling(world, 200, blind) for blind in ((), ("shape",), ("shape", "cell")))
    for key in full:
        assert no_shape_or_cell[key] < no_shape[key] < full[key]
    with pytest.raises(ValueError, match="'texture'"):
        positives(world, 10, blind=("texture",))


def test_twin_pairs_sit_side_by_side_in_the_batch(tokenizer):
    world = ToyWorld("train", image_size=32, size=8)
    pairs = ToyPairs(world, twins=1)
    scene_item, twin_item = pairs[5]
    assert scene_item["caption"] == world.scene(5).caption and twin_item["caption"] == world.twin(5).caption
    assert scene_item["image"].tobytes() == world.image(5).tobytes()
    assert twin_item["image"].tobytes() != scene_item["image"].tobytes()
    batch = Collate(tokenizer, tiny_vision())([pairs[i] for i in (5, 2)])
    assert batch["index"].tolist() == [5, 5, 2, 2] and batch["pixel_values"].shape[0] == 4


def test_family_holds_distinct_twins_of_one_scene(tokenizer):
    world = ToyWorld("train", image_size=32, size=50)
    for index in range(50):
        family = world.family(index, 7)
        assert family[0] == world.scene(index) and len({s.caption for s in family}) == 8
        assert all(not s.described_by(family[0].mentions) for s in family[1:])
    batch = Collate(tokenizer, tiny_vision())([ToyPairs(world, twins=3)[i] for i in (4, 9)])
    assert batch["index"].tolist() == [4] * 4 + [9] * 4


@pytest.mark.parametrize("blind", [(), ("colour",), ("cell",), ("shape", "size"), ("colour", "shape", "size", "cell")])
def test_vectorised_positives_equal_the_pairwise_definition(blind):
    world = ToyWorld("val", image_size=32)
    scenes = [world.scene(i) for i in range(200)]
    pairwise = np.array([[s.described_by(c.mentions, blind) for s in scenes] for c in scenes])
    assert (positives(world, 200, blind) == pairwise).all()
    assert pairwise.sum() > 200 or blind == ()  # blinding makes captions describe more images
