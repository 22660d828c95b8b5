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


def _png_bytes(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_webdataset_images_get_load_images_pixel_limit(tmp_path, monkeypatch):
    _shard(tmp_path / "big.tar", [("k.png", _png_bytes(100, 80)), ("k.txt", b"a cat")])
    with pytest.raises(ImageLoadError, match=r"big\.tar: sample 'k': image is 100x80 = 8000 pixels, over "
                                             r"max_pixels=1000"):
        list(webdataset(["big.tar"], tmp_path, max_pixels=1000))
    assert list(webdataset(["big.tar"], tmp_path, max_pixels=8000))[0][0].shape == (80, 100, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own bomb limit, as load_image: our error, named
    with pytest.raises(ImageLoadError, match=r"big\.tar: sample 'k': image is too large for PIL"):
        list(webdataset(["big.tar"], tmp_path))


@pytest.mark.parametrize("caption, expected", [
    (b"caf\xe9 au lait", r"sample 'k' caption \(txt\) is not UTF-8 text \(byte 0xe9 at offset 3\)"),
    (b" \n\t", r"sample 'k' has an empty caption"),
])
def test_webdataset_bad_caption_names_the_shard_and_sample(tmp_path, caption, expected):
    _shard(tmp_path / "a.tar", [("k.jpg", _jpg_bytes(1)), ("k.txt", caption)])
    with pytest.raises(DatasetError, match=r"a\.tar: " + expected) as info:
        list(webdataset(["a.tar"], tmp_path))
    assert "\n" not in str(info.value)


def test_karpathy_non_utf8_bytes_name_the_file_and_entry(tmp_path):
    _png(tmp_path / "a.png", 10)
    good = {"split": "test", "filename": "a.png", "sentences": [{"raw": "a cat"}]}
    bad = {"split": "test", "filename": "a.png", "sentences": [{"raw": "a cat"}, {"raw": "caf@"}]}
    raw = json.dumps({"images": [good, bad]}).encode().replace(b"caf@", b"caf\xe9")
    (tmp_path / "d.json").write_bytes(raw)
    with pytest.raises(DatasetError, match=r"d\.json: images\[1\]\.sentences\[1\]\.raw is not UTF-8 text "
                                           r"\(byte 0xe9 at character 3\)") as info:
        karpathy(tmp_path / "d.json", tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("images, expected", [
    ([5], r"images\[0\] is a JSON number, expected an object with split, filename and sentences"),
    ([{"split": "test", "filename": "a.png", "sentences": ["a cat"]}],
     r"images\[0\]\.sentences\[0\] is 'a cat', expected an object with 'raw'"),
    ([{"split": "test", "filename": "a.png", "sentences": [{"raw": 5}]}],
     r"images\[0\]\.sentences\[0\]\.raw is 5, expected a string"),
    ([{"split": "test", "filename": "a.png", "sentences": "a cat"}],
     r"images\[0\]\.sentences is a JSON string, expected a list"),
    ([{"split": "test", "filename": ["a.png"], "sentences": [{"raw": "x"}]}],
     r"images\[0\]\.filename is \['a.png'\], expected a string"),
    ([{"split": "test", "sentences": [{"raw": "x"}]}], r"images\[0\] lacks 'filename'"),
    ({"a": 1}, r"expected Karpathy's format \(an object whose 'images' is a list\)"),
])
def test_karpathy_entries_that_are_not_objects_name_the_file_and_entry(tmp_path, images, expected):
    _png(tmp_path / "a.png", 10)
    (tmp_path / "d.json").write_text(json.dumps({"images": images}))
    with pytest.raises(DatasetError, match=r"d\.json: " + expected):
        karpathy(tmp_path / "d.json", tmp_path)


@pytest.mark.parametrize("content, expected", [
    (json.dumps([["img/1.png", "what?"]]).encode(), r"q\.json\[0\] is a JSON array, expected an \{image, "),
    (json.dumps([{"image": "img/1.png", "question": "q", "answer": 5}]).encode(),
     r"q\.json\[0\]\.answer is 5, expected a string or a list of strings"),
    (json.dumps([{"image": "img/1.png", "question": "q", "answer": ["yes", None]}]).encode(),
     r"q\.json\[0\]\.answer\[1\] is None, expected a string"),
    (json.dumps([{"image": 3, "question": "q"}]).encode(), r"q\.json\[0\]\.image is 3, expected a string"),
    (json.dumps([{"image": "img/1.png", "question": "caf@"}]).encode().replace(b"@", b"\xe9"),
     r"q\.json\[0\]\.question is not UTF-8 text \(byte 0xe9"),
    (json.dumps({"image": "img/1.png"}).encode(), r"VQA file .*q\.json holds a JSON object, expected a JSON array"),
])
def test_vqa_entries_that_are_not_objects_name_the_file_and_entry(tmp_path, content, expected):
    _png(tmp_path / "img" / "1.png", 50)
    (tmp_path / "q.json").write_bytes(content)
    with pytest.raises(DatasetError, match=expected):
        vqa(tmp_path / "q.json", tmp_path)
