"""Real dataset formats on tiny files the tests write: Karpathy JSON, webdataset shards, VQA JSON."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from vlprune.data.images import ImageLoadError
from vlprune.data.real import DatasetError, karpathy, vqa, webdataset


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), colour, np.uint8)).save(path)


def _jpg_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_karpathy_split_captions_and_images(tmp_path):
    _png(tmp_path / "val2014" / "a.png", 10)
    _png(tmp_path / "val2014" / "b.png", 200)
    entries = [{"split": "test", "filepath": "val2014", "filename": "a.png",
                "sentences": [{"raw": "a cat "}, {"raw": "the cat"}]},
               {"split": "train", "filepath": "val2014", "filename": "a.png", "sentences": [{"raw": "x"}]},
               {"split": "test", "filepath": "val2014", "filename": "b.png", "sentences": [{"raw": "a dog"}]}]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    data = karpathy(tmp_path / "dataset_coco.json", tmp_path, "test")
    assert data.captions == ["a cat", "the cat", "a dog"] and data.text_image == [0, 0, 1]
    assert len(data) == 2 and data.image(1).shape == (6, 8, 3) and int(data.image(1)[0, 0, 0]) == 200
    with pytest.raises(DatasetError, match="no images in split 'val'"):
        karpathy(tmp_path / "dataset_coco.json", tmp_path, "val")


@pytest.mark.parametrize("sentences, what", [([], "no sentences"), ([{"raw": "a cat"}, {"raw": "  "}],
                                                                     "an empty sentence at index 1")])
def test_karpathy_image_without_a_caption_is_named(tmp_path, sentences, what):
    _png(tmp_path / "a.png", 10)
    entries = [{"split": "test", "filename": "a.png", "sentences": sentences}]
    (tmp_path / "d.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(DatasetError, match=rf"images\[0\] \(a.png\) has {what}"):
        karpathy(tmp_path / "d.json", tmp_path)


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "val2014/../../x.png"])
def test_paths_may_not_escape_the_dataset_root(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    (root / "d.json").write_text(json.dumps({"images": [{"split": "test", "filename": name,
                                                         "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        karpathy(root / "d.json", root)
    (root / "q.json").write_text(json.dumps([{"image": name, "question": "what?", "answer": "x"}]))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        vqa(root / "q.json", root)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _png(tmp_path / "secret.png", 1)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "q.json").write_text(json.dumps([{"image": "link.png", "question": "q", "answer": "a"}]))
    with pytest.raises(DatasetError, match="escapes"):
        vqa(root / "q.json", root)


def test_vqa_json_questions_and_answers(tmp_path):
    _png(tmp_path / "img" / "1.png", 50)
    (tmp_path / "vqa.json").write_text(json.dumps([
        {"image": "img/1.png", "question": "what colour?", "answer": ["grey", "gray"]},
        {"image": "img/1.png", "question": "is it dark?", "answer": "yes"}]))
    items = vqa(tmp_path / "vqa.json", tmp_path)
    assert [i.answers for i in items] == [["grey", "gray"], ["yes"]]
    assert items[0].image_path == (tmp_path / "img" / "1.png").resolve()
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "img/1.png"}]))
    with pytest.raises(DatasetError, match=r"bad.json\[0\]: needs 'image' and 'question'"):
        vqa(tmp_path / "bad.json", tmp_path)


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_pair_jpg_and_txt(tmp_path):
    _shard(tmp_path / "000.tar", [("s1.jpg", _jpg_bytes(30)), ("s1.txt", b"a red cube\n"),
                                  ("s2.txt", b"a blue ball"), ("s2.jpg", _jpg_bytes(220))])
    _shard(tmp_path / "001.tar", [("s3.jpg", _jpg_bytes(120)), ("s3.txt", b"grey")])
    samples = list(webdataset(["000.tar", "001.tar"], tmp_path))
    assert [(caption, key) for _, caption, key in samples] == [("a red cube", "s1"), ("a blue ball", "s2"),
                                                              ("grey", "s3")]
    assert samples[1][0].shape == (8, 8, 3) and abs(int(samples[1][0].mean()) - 220) < 5


def test_webdataset_errors_name_the_shard_and_sample(tmp_path):
    _shard(tmp_path / "a.tar", [("k.jpg", _jpg_bytes(1))])
    with pytest.raises(DatasetError, match=r"a.tar: sample 'k' has \['jpg'\]; needs jpg \(or png\) and txt"):
        list(webdataset(["a.tar"], tmp_path))
    _shard(tmp_path / "b.tar", [("k.jpg", b"not an image"), ("k.txt", b"x")])
    with pytest.raises(ImageLoadError, match="b.tar: sample 'k'"):
        list(webdataset(["b.tar"], tmp_path))
    (tmp_path / "c.tar").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable tar shard"):
        list(webdataset(["c.tar"], tmp_path))
    with pytest.raises(DatasetError, match="escapes"):
        list(webdataset(["../a.tar"], tmp_path / "sub"))
