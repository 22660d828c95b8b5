"""Image loading across PIL modes and broken files, and CLIP preprocessing."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vlprune.data.images import ImageLoadError, Preprocess, load_image, load_images

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.5)


def _save(tmp_path, img, name, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_grayscale_and_bilevel(tmp_path):
    arr = load_image(_save(tmp_path, Image.new("L", (5, 4), 100), "g.png"))
    assert arr.shape == (4, 5, 3) and arr.dtype == np.uint8 and (arr == 100).all()
    assert (load_image(_save(tmp_path, Image.new("1", (3, 3), 1), "b.png")) == 255).all()


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    arr = load_image(_save(tmp_path, Image.fromarray(rgba), "a.png"))
    assert arr.tolist() == [[[255, 255, 255], [0, 0, 255], [127, 127, 127]]]
    la = load_image(_save(tmp_path, Image.new("LA", (2, 2), (0, 0)), "la.png"))
    assert (la == 255).all()


def test_palette_with_transparency(tmp_path):
    img = Image.fromarray(np.array([[0, 1]], dtype=np.uint8)).convert("P")
    img.putpalette([255, 0, 0, 0, 200, 0])
    arr = load_image(_save(tmp_path, img, "p.png", transparency=0))
    assert arr.tolist() == [[[255, 255, 255], [0, 200, 0]]]
    arr = load_image(_save(tmp_path, img, "p_opaque.png"))
    assert arr.tolist() == [[[255, 0, 0], [0, 200, 0]]]


def test_high_bit_depth_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(values)
    assert img16.mode == "I;16"
    arr = load_image(_save(tmp_path, img16, "g16.png"))
    assert arr[0, :, 0].tolist() == [0, 128, 255]  # clipping would give 255 for mid-grey
    big_endian = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    assert load_image(_save(tmp_path, big_endian, "g16b.tif"))[0, :, 1].tolist() == [0, 128, 255]
    img32 = Image.fromarray(values.astype(np.int32))
    assert img32.mode == "I"
    assert load_image(_save(tmp_path, img32, "g32.tif"))[0, :, 2].tolist() == [0, 128, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert load_image(_save(tmp_path, floats, "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg(tmp_path):
    arr = load_image(_save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg"))
    assert arr.shape == (8, 8, 3)
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_bad_files_raise_named_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = _save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
                 "full.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(1).integers(0, 255, 500, np.uint8).tobytes())
    for path in (empty, truncated, noise, tmp_path / "missing.png"):
        with pytest.raises(ImageLoadError, match=path.name) as info:
            load_image(path)
        assert info.value.path == str(path)
    with pytest.raises(ImageLoadError, match=r"noise\.jpg: cannot be decoded .*load_images\(\.\.\., skip_bad=True\)$"):
        load_image(noise)  # the hint names what exists: there is no --skip-bad flag


def test_error_survives_pickle_and_single_message():
    err = pickle.loads(pickle.dumps(ImageLoadError.for_file("x.png", "broken")))
    assert err.path == "x.png" and "x.png: broken" in str(err)
    assert str(ImageLoadError("plain message")) == "plain message"  # DataLoader re-raises with exc_type(msg)


def test_pixel_limit(tmp_path, monkeypatch):
    path = _save(tmp_path, Image.new("RGB", (100, 80)), "big.png")
    with pytest.raises(ImageLoadError, match=r"big\.png.*100x80 = 8000 pixels"):
        load_image(path, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError, match=r"big\.png.*too large"):
            load_image(path)  # over PIL's own 2x hard limit: still our error, not DecompressionBombError
        small = _save(tmp_path, Image.new("RGB", (40, 30)), "mid.png")  # over PIL's warning threshold
        assert load_image(small, max_pixels=5000).shape == (30, 40, 3)


def test_load_images_skip_bad(tmp_path):
    good = _save(tmp_path, Image.new("RGB", (4, 4)), "ok.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    arrays, skipped = load_images([good, bad, good], skip_bad=True)
    assert len(arrays) == 2 and [p for p, _ in skipped] == [str(bad)] and "bad.jpg" in skipped[0][1]
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_images([good, bad])


def test_preprocess_crop_without_resampling_is_exact():
    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = Preprocess(4, MEAN, STD)(arr)
    assert out.shape == (3, 4, 4) and out.dtype == torch.float32
    crop = arr[:, 1:5].astype(np.float32) / 255  # centre crop of width 6 -> 4 starts at column 1
    expected = (crop - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    assert torch.allclose(out, torch.from_numpy(expected.transpose(2, 0, 1)), atol=1e-6)


def test_preprocess_resize_shortest_and_values():
    pre = Preprocess(3, MEAN, STD)
    constant = np.full((6, 12, 3), 200, np.uint8)  # bicubic keeps a constant image constant
    out = pre(constant)
    assert out.shape == (3, 3, 3)
    assert torch.allclose(out[0], torch.full((3, 3), (200 / 255 - 0.5) / 0.2), atol=1e-6)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 12, 3), np.uint8)
    resized = np.asarray(Image.fromarray(arr).resize((6, 3), Image.Resampling.BICUBIC))[:, 1:4]
    expected = (resized / 255 - np.array(MEAN)) / np.array(STD)
    assert torch.allclose(pre(arr), torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-5)
    assert torch.equal(pre(Image.fromarray(arr)), pre(arr))
    assert pre(np.zeros((5, 5), np.uint8)).shape == (3, 3, 3)  # grayscale array
    assert Preprocess(3, MEAN, STD, resize="squash")(arr).shape == (3, 3, 3)
    assert pre.batch([arr, constant]).shape == (2, 3, 3, 3)


def test_preprocess_float_input_and_validation():
    pre = Preprocess(2, MEAN, STD)
    half = np.full((2, 2, 3), 0.5, np.float32)
    assert torch.allclose(pre(half)[0], torch.zeros(2, 2))
    bad = half.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image array contains 1 NaN/inf"):
        pre(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pre(half * 255)
    with pytest.raises(ValueError, match="image_size"):
        Preprocess(0, MEAN, STD)
    with pytest.raises(ValueError, match="std"):
        Preprocess(4, MEAN, (0.2, 0.0, 0.5))
    with pytest.raises(ValueError, match="resize"):
        Preprocess(4, MEAN, STD, resize="stretch")
    with pytest.raises(ValueError, match="at least one"):
        pre.batch([])
