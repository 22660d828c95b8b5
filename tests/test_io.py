"""Save/load: bit-exact round trips (also of non-uniform pruned shapes) and strict loading, where every problem
is one CheckpointError naming the file and the offending keys, never a raw torch/safetensors exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune import CheckpointError
from vlprune.tokenizer import WordTokenizer

ZERO_INIT_WARNING = "ignore:Initializing zero-element tensors:UserWarning"


def _assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def _save(model, directory: Path, tokenizer=None) -> Path:
    return vlprune.save(model, directory, tokenizer)


@pytest.mark.parametrize("kind", ["clip", "fusion"])
def test_save_load_is_bit_exact(kind, clip_model, fusion_model, tokenizer, pixels, tmp_path):
    model = clip_model if kind == "clip" else fusion_model
    with torch.no_grad():
        model.logit_scale.fill_(1.2345678)  # a trained, non-default value
    directory = _save(model, tmp_path / "ckpt", tokenizer)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = vlprune.load(directory)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training
    _assert_identical(model, loaded)
    ids, mask = tokenizer(["a red square", "a big blue circle at top left", "a cyan cross"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), loaded.encode_image(pixels))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))
        if kind == "fusion":
            assert torch.equal(model.itm_logits(pixels, ids, mask), loaded.itm_logits(pixels, ids, mask))
            assert torch.equal(model.vqa_logits(pixels, ids, mask), loaded.vqa_logits(pixels, ids, mask))
    again = vlprune.load_tokenizer(directory)
    assert again.vocab == tokenizer.vocab and again.max_length == tokenizer.max_length


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_non_uniform_pruned_shapes_round_trip(pixels, tokenizer, tmp_path):
    torch.manual_seed(3)
    cfg = tiny_fusion_config(vision={"num_layers": 3, "num_heads": [4, 0, 1], "intermediate_size": [64, 8, 0],
                                     "layer_map": [0, 5, 11]},
                             text={"num_heads": [2, 0, 3], "intermediate_size": [0, 16, 40], "layer_map": [0, 3, 5]})
    model = vlprune.build_model(cfg).eval()
    assert model.visual.blocks[1].attn.q.weight.shape == (0, 32)
    loaded = vlprune.load(_save(model, tmp_path))
    assert loaded.config.vision.num_heads == (4, 0, 1) and loaded.config.text.intermediate_size == (0, 16, 40)
    assert loaded.config.vision.layer_map == (0, 5, 11)
    _assert_identical(model, loaded)
    ids, mask = tokenizer(["a red square"] * 3)
    with torch.no_grad():
        assert torch.equal(model.itm_logits(pixels, ids, mask), loaded.itm_logits(pixels, ids, mask))


def test_saved_weights_are_safetensors_with_the_state_dict_keys(clip_model, tmp_path):
    directory = _save(clip_model, tmp_path)
    state = load_file(str(directory / "model.safetensors"))
    assert set(state) == set(clip_model.state_dict())
    assert json.loads((directory / "config.json").read_text()) == clip_model.config.to_dict()
    assert not list(directory.glob("*.tmp"))


# -- strict loading -------------------------------------------------------------------------------------

def test_checkpoint_of_another_architecture_names_keys_and_shapes(clip_model, tmp_path):
    directory = _save(clip_model, tmp_path)
    # one more vision layer (missing keys) and wider MLPs in the text tower (shape mismatches)
    other = tiny_clip_config(vision={"num_layers": 3}, text={"intermediate_size": 48})
    other.to_json(directory / "config.json")
    with pytest.raises(CheckpointError) as info:
        vlprune.load(directory)
    message = str(info.value)
    assert type(info.value) is CheckpointError
    assert "model.safetensors" in message
    assert "missing keys" in message and "visual.blocks.2.attn.q.weight" in message
    assert "shape mismatches" in message and "text.blocks.0.mlp.fc1.weight: checkpoint (64, 32) vs model (48, 32)" \
        in message


def test_fusion_weights_under_a_clip_config_name_unexpected_keys(fusion_model, tmp_path):
    directory = _save(fusion_model, tmp_path)
    fusion = fusion_model.config
    clip = tiny_clip_config(text={"flavour": "bert", "num_layers": 3, "pre_norm": False, "eot_token_id": None})
    assert clip.text.num_layers == fusion.text.num_layers
    clip.to_json(directory / "config.json")
    with pytest.raises(CheckpointError, match=r"unexpected keys \[.*itm_head.*"):
        vlprune.load(directory)


def test_truncated_weights_name_the_file(clip_model, tmp_path):
    directory = _save(clip_model, tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        vlprune.load(directory)
    assert type(info.value) is CheckpointError
    assert str(weights) in str(info.value) and "truncated or corrupt" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x08\x00", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
                                     b"\xff" * 64])
def test_empty_or_garbage_weights_name_the_file(clip_model, tmp_path, content):
    directory = _save(clip_model, tmp_path)
    (directory / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="model.safetensors") as info:
        vlprune.load(directory)
    assert type(info.value) is CheckpointError


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_files(clip_model, tmp_path, missing):
    directory = _save(clip_model, tmp_path)
    (directory / missing).unlink()
    with pytest.raises(CheckpointError, match=rf"{missing} is missing") as info:
        vlprune.load(directory)
    assert type(info.value) is CheckpointError


@pytest.mark.parametrize("content, expected", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe\x00\x01", "UTF-8"),
    (b'{"kind": "clip", "vision": {"image_mean": 3}}', r"VisionConfig\.image_mean"),
    (b'{"kind": "clip", "embed_dim": -4}', r"ModelConfig\.embed_dim"),
])
def test_bad_config_json(clip_model, tmp_path, content, expected):
    directory = _save(clip_model, tmp_path)
    (directory / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        vlprune.load(directory)
    assert type(info.value) is CheckpointError and "config.json" in str(info.value)


def test_future_format_version_says_upgrade(clip_model, tmp_path):
    directory = _save(clip_model, tmp_path)
    data = json.loads((directory / "config.json").read_text())
    data["format_version"] = 99
    data["some_future_field"] = True
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="format_version=99.*upgrade vlprune"):
        vlprune.load(directory)


def test_unknown_name_lists_what_is_known():
    with pytest.raises(CheckpointError) as info:
        vlprune.load("no-such-model")
    message = str(info.value)
    assert type(info.value) is CheckpointError and "'no-such-model'" in message
    for name in vlprune.list_models():
        assert name in message


def test_registered_architecture_without_weights_says_create_model():
    assert "vit-b16-clip" in vlprune.list_models()
    with pytest.raises(CheckpointError, match=r"create_model\('vit-b16-clip'\)") as info:
        vlprune.load("vit-b16-clip")
    assert type(info.value) is CheckpointError


def test_create_model_builds_registered_architectures():
    model = vlprune.create_model("toy-clip")
    assert model.config == vlprune.registry.model_config("toy-clip")
    assert model.config.text.vocab_size == len(vlprune.data.toyworld.toy_tokenizer())
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        vlprune.create_model("nope")


def test_load_tokenizer_without_one_saved(clip_model, tmp_path):
    directory = _save(clip_model, tmp_path)
    with pytest.raises(CheckpointError, match="without a tokenizer"):
        vlprune.load_tokenizer(directory)
    (directory / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        WordTokenizer.load(directory / "tokenizer.json")
