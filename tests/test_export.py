"""export_toyworld: each real format's layout, read back with the stdlib and vlprune.data.real's loaders."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlprune.data import export as export_module
from vlprune.data.export import EXPORT_FORMATS, INDEX_FILES, data_spec, export_toyworld
from vlprune.data.images import load_image
from vlprune.data.real import karpathy, webdataset
from vlprune.data.toyworld import SPLIT_SIZES, ZEROSHOT_TEMPLATES, ToyWorld, class_names

SIZE = 32


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_karpathy_reads_back_with_same_captions_and_pixels(tmp_path):
    out = export_toyworld("karpathy", tmp_path / "k", count=6, split="test", image_size=SIZE)
    world = ToyWorld("test", SIZE)
    data = karpathy(out / "dataset.json", out / "images", "test")
    assert data.captions == [world.scene(i).caption for i in range(6)]
    assert data.text_image == list(range(6))
    for i in range(6):
        np.testing.assert_array_equal(data.image(i), world.image(i))
    assert data_spec("karpathy", out, "test") == f"karpathy:{out}/dataset.json:{out}/images:test"


def test_karpathy_json_layout(tmp_path):
    out = export_toyworld("karpathy", tmp_path, count=3, image_size=SIZE)
    doc = json.loads((out / "dataset.json").read_text())
    caption = ToyWorld("val", SIZE).scene(2).caption
    assert doc["dataset"] == "toyworld" and len(doc["images"]) == 3
    assert doc["images"][2] == {"split": "val", "filename": "val_000002.png", "filepath": "", "imgid": 2,
                                "sentences": [{"raw": caption, "tokens": caption.split(), "imgid": 2, "sentid": 2}],
                                "sentids": [2], "cocoid": 2}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"val_{i:06d}.png" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "images"]  # no staging left behind


def test_wds_shards_read_back_in_order(tmp_path):
    out = export_toyworld("wds", tmp_path, count=7, image_size=SIZE, shard_size=3)
    world = ToyWorld("val", SIZE)
    assert (out / "shards.txt").read_text() == "shards-{000000..000002}.tar\n"
    shards = [f"shards-{k:06d}.tar" for k in range(3)]
    assert sorted(p.name for p in out.glob("*.tar")) == shards
    samples = list(webdataset(shards, out))
    assert [key for _, _, key in samples] == [f"{i:06d}" for i in range(7)]
    assert [caption for _, caption, _ in samples] == [world.scene(i).caption for i in range(7)]
    for i, (image, _, _) in enumerate(samples):
        np.testing.assert_array_equal(image, world.image(i))
    assert data_spec("wds", out) == f"wds:{out}/shards-{{000000..000002}}.tar"


def test_wds_members_and_metadata(tmp_path):
    out = export_toyworld("wds", tmp_path, count=4, image_size=SIZE, shard_size=3)
    with tarfile.open(out / "shards-000001.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["000003.json", "000003.png", "000003.txt"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
        meta = json.loads(tar.extractfile("000003.json").read())
    scene = ToyWorld("val", SIZE).scene(3)
    assert meta == {"index": 3, "question": scene.question, "answer": scene.answer,
                    "question_type": scene.question_type}


def test_vqa_v2_layout(tmp_path):
    out = export_toyworld("vqa", tmp_path, count=5, image_size=SIZE)
    world = ToyWorld("val", SIZE)
    questions = json.loads((out / "questions.json").read_text())["questions"]
    annotations = json.loads((out / "annotations.json").read_text())["annotations"]
    assert len(questions) == len(annotations) == 5
    for i, (q, a) in enumerate(zip(questions, annotations)):
        scene = world.scene(i)
        assert q == {"image_id": i, "question": scene.question, "question_id": i}
        assert a["image_id"] == a["question_id"] == i and a["answer_type"] == "other"
        assert a["question_type"] == scene.question_type and a["multiple_choice_answer"] == scene.answer
        assert a["answers"] == [{"answer": scene.answer, "answer_confidence": "yes", "answer_id": k}
                                for k in range(1, 11)]
        np.testing.assert_array_equal(load_image(out / "images" / f"COCO_val2014_{i:012d}.png"), world.image(i))
    assert data_spec("vqa", out) == f"vqa:{out}/questions.json:{out}/annotations.json:{out}/images"


def test_folder_uses_zeroshot_split_and_label_order(tmp_path):
    out = export_toyworld("folder", tmp_path, count=12, split="train", image_size=SIZE)
    world, names = ToyWorld("zeroshot", SIZE), class_names()
    assert (out / "classnames.txt").read_text().splitlines() == names
    assert (out / "templates.txt").read_text().splitlines() == list(ZEROSHOT_TEMPLATES)
    files = sorted(out.glob("*/*.png"))
    assert [f.name for f in files] != [] and len(files) == 12
    for file in files:
        i = int(file.stem)
        image, label = world.classification(i)
        assert names.index(file.parent.name.replace("_", " ")) == label
        np.testing.assert_array_equal(load_image(file), image)
    assert data_spec("folder", out) == f"folder:{out}"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_exports_are_byte_reproducible(tmp_path, fmt):
    first = _tree(export_toyworld(fmt, tmp_path / "a", count=5, image_size=SIZE, shard_size=2))
    second = _tree(export_toyworld(fmt, tmp_path / "b", count=5, image_size=SIZE, shard_size=2))
    assert first == second and INDEX_FILES[fmt] in first


def test_jpg_option(tmp_path):
    world = ToyWorld("val", SIZE)
    out = export_toyworld("karpathy", tmp_path / "k", count=3, image_size=SIZE, image_format="jpg")
    data = karpathy(out / "dataset.json", out / "images", "val")
    assert all(p.suffix == ".jpg" for p in data.image_paths)
    with Image.open(data.image_paths[0]) as img:
        assert img.format == "JPEG"
    for i in range(3):
        assert np.abs(data.image(i).astype(int) - world.image(i)).mean() < 5  # quality 95, 4:4:4
    shards = export_toyworld("wds", tmp_path / "w", count=3, image_size=SIZE, image_format="jpg")
    with tarfile.open(shards / "shards-000000.tar") as tar:
        assert tar.getnames()[:3] == ["000000.jpg", "000000.json", "000000.txt"]
    assert len(list(webdataset(["shards-000000.tar"], shards))) == 3


@pytest.mark.parametrize("kwargs, argument", [
    ({"fmt": "coco"}, "fmt="),
    ({"count": 0}, "count="),
    ({"count": SPLIT_SIZES["val"] + 1}, f"holds {SPLIT_SIZES['val']} items"),
    ({"fmt": "folder", "count": SPLIT_SIZES["zeroshot"] + 1}, "'zeroshot' split"),
    ({"shard_size": 0}, "shard_size="),
    ({"split": "dev"}, "split="),
    ({"image_format": "gif"}, "image_format="),
    ({"image_size": 30}, "image_size="),
])
def test_refuses_bad_arguments(tmp_path, kwargs, argument):
    args = {"fmt": "wds", "out": tmp_path / "out", "count": 2, "image_size": SIZE} | kwargs
    with pytest.raises(ValueError, match=argument) as err:
        export_toyworld(**args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_refuses_file_and_non_empty_out(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ValueError, match="out=.*existing file"):
        export_toyworld("karpathy", file, count=2, image_size=SIZE)
    done = export_toyworld("karpathy", tmp_path / "done", count=2, image_size=SIZE)
    with pytest.raises(ValueError, match="out=.*already holds an export"):
        export_toyworld("karpathy", done, count=2, image_size=SIZE)
    (tmp_path / "empty").mkdir()
    assert (export_toyworld("vqa", tmp_path / "empty", count=2, image_size=SIZE) / "questions.json").is_file()


def test_failed_export_leaves_no_index(tmp_path, monkeypatch):
    real_encode, calls = export_module._encode, []

    def failing(image, image_format):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_encode(image, image_format)

    monkeypatch.setattr(export_module, "_encode", failing)
    with pytest.raises(OSError, match="disk full"):
        export_toyworld("karpathy", tmp_path / "out", count=5, image_size=SIZE)
    assert list((tmp_path / "out").iterdir()) == []
