"""Bad input gets one clear line: absurd model sizes are refused before allocation, integer weights are not cast
to float, bad config / tokenizer JSON names the file and the field, and fuzzed config JSON loads or raises
ConfigError — never another exception."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune.config import ConfigError, ModelConfig, TextConfig, VisionConfig, read_json_object
from vlprune.models.convert import ConversionError, from_hf, from_open_clip
from vlprune.models.convert.directory import convert_directory
from vlprune.models.io import (
    DEFAULT_MAX_PARAMS,
    MAX_PARAMS_ENV,
    CheckpointError,
    build_model,
    load_state_strict,
    max_params,
)
from vlprune.models.size import estimate_params
from vlprune.registry import model_config
from vlprune.tokenizer_adapters import load_any

FAST = 1.0  # seconds: a refusal must come before anything big is allocated


# -- 1. parameter count from the config, and the size limit ---------------------------------------------------

SHAPES = {
    "clip": tiny_clip_config(),
    "fusion-albef": tiny_fusion_config(),
    "fusion-no-vqa": tiny_fusion_config(num_answers=0),
    "blip-from-embeddings": tiny_fusion_config(text={"num_layers": 2, "num_heads": [0, 2],
                                                     "cross_attention_layers": (0, 1),
                                                     "fusion_from_embeddings": True}, proj_bias=True),
    "pruned-per-layer": tiny_fusion_config(vision={"num_layers": 3, "num_heads": [4, 0, 2],
                                                   "intermediate_size": [0, 5, 64], "layer_map": [0, 4, 7]},
                                           text={"num_heads": [1, 0, 3], "intermediate_size": [7, 0, 64],
                                                 "cross_attention_layers": (1, 2)}),
    "bert-text-in-clip": tiny_clip_config(text={"flavour": "bert", "pre_norm": False}),
    "biases-off": tiny_clip_config(vision={"qkv_bias": False, "patch_bias": False, "ln_pre": True, "pool": "mean"},
                                   text={"qkv_bias": False}, proj_bias=True),
    "no-layers-one-channel": tiny_clip_config(vision={"num_layers": 0, "channels": 1, "image_mean": (0.5,),
                                                      "image_std": (0.5,)}, text={"num_layers": 0}),
    "toy-clip": model_config("toy-clip"),
    "toy-fusion": model_config("toy-fusion"),
}


@pytest.mark.parametrize("name", SHAPES)
def test_estimate_params_equals_the_built_models_count(name):
    config = SHAPES[name]
    assert estimate_params(config) == build_model(config).num_params()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_property_estimate_params_equals_num_params_on_random_shapes(data):
    def tower(layers: int) -> dict:
        per_layer = st.integers(0, 5) if data.draw(st.booleans()) else st.lists(st.integers(0, 5), min_size=layers,
                                                                              max_size=layers)
        return {"num_layers": layers, "width": data.draw(st.integers(1, 12)), "head_dim": data.draw(st.integers(1, 4)),
                "num_heads": data.draw(per_layer), "intermediate_size": data.draw(per_layer),
                "qkv_bias": data.draw(st.booleans())}

    kind = data.draw(st.sampled_from(["clip", "fusion"]))
    vision = {**tower(data.draw(st.integers(0, 3))), "ln_pre": data.draw(st.booleans()),
              "patch_bias": data.draw(st.booleans()), "patch_size": data.draw(st.sampled_from([4, 8, 16])),
              "pool": data.draw(st.sampled_from(["cls", "mean"]))}
    text = {**tower(data.draw(st.integers(1, 3))), "vocab_size": data.draw(st.integers(40, 90)),
            "max_length": data.draw(st.integers(1, 40)), "flavour": data.draw(st.sampled_from(["clip", "bert"]))}
    extra = {"proj_bias": data.draw(st.booleans()), "embed_dim": data.draw(st.integers(1, 9))}
    if kind == "fusion":
        from_embeddings = data.draw(st.booleans())
        layers = range(text["num_layers"])
        cross = tuple(layers) if from_embeddings else tuple(sorted(data.draw(
            st.lists(st.sampled_from(list(layers)), min_size=1, unique=True))))
        text = {**text, "flavour": "bert", "cross_attention_layers": cross, "encoder_width": vision["width"],
                "fusion_from_embeddings": from_embeddings, "eot_token_id": None}
        config = tiny_fusion_config(vision=vision, text=text, num_answers=data.draw(st.integers(0, 4)), **extra)
    else:
        config = tiny_clip_config(vision=vision, text={**text, "eot_token_id": None}, **extra)
    assert estimate_params(config) == build_model(config).num_params()


def test_estimate_matches_clip_vit_b16s_published_count():
    """OpenAI CLIP ViT-B/16 has 149,620,737 parameters; counted without building the 600 MB model."""
    assert estimate_params(model_config("vit-b16-clip")) == 149_620_737


ABSURD = {
    "width-1e6": ModelConfig(vision=VisionConfig(width=1_000_000, head_dim=1000, num_heads=1000,
                                                 intermediate_size=4_000_000)),
    "vocab-1e10": ModelConfig(text=TextConfig(vocab_size=10_000_000_000)),
    "100k-layers": ModelConfig(vision=VisionConfig(num_layers=100_000)),
}


def _assert_refused(message: str, config: ModelConfig) -> None:
    assert "\n" not in message
    assert f"{estimate_params(config):,} parameters" in message
    assert f"{DEFAULT_MAX_PARAMS:,}" in message and MAX_PARAMS_ENV in message and "--max-params" in message


@pytest.mark.parametrize("name", ABSURD)
def test_absurd_sizes_are_refused_before_allocation(name, tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PARAMS_ENV, raising=False)
    config, text = ABSURD[name], ABSURD[name].to_json()
    (tmp_path / "config.json").write_text(text)
    save_file({}, str(tmp_path / "model.safetensors"))
    assert estimate_params(config) > DEFAULT_MAX_PARAMS
    start = time.perf_counter()
    with pytest.raises(ConfigError) as built:
        build_model(config)
    with pytest.raises(ConfigError) as from_dict:
        build_model(ModelConfig.from_dict(json.loads(text)))
    with pytest.raises(CheckpointError) as loaded:
        vlprune.load(tmp_path)
    assert time.perf_counter() - start < FAST
    _assert_refused(str(built.value), config)
    _assert_refused(str(from_dict.value), config)
    _assert_refused(str(loaded.value), config)
    assert str(loaded.value).startswith(str(tmp_path / "config.json"))


def test_too_many_layers_is_a_config_error_naming_the_field():
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"VisionConfig\.num_layers=100001 .*\[0, 100000\]"):
        ModelConfig.from_dict({"vision": {"num_layers": 100_001}})
    with pytest.raises(ConfigError, match=r"TextConfig\.num_layers=10000000000000 "):
        ModelConfig.from_dict({"text": {"num_layers": 10**13}})
    assert time.perf_counter() - start < FAST


def test_max_params_reads_the_environment_and_the_limit_can_be_raised(monkeypatch):
    config = tiny_clip_config()
    count = estimate_params(config)
    monkeypatch.delenv(MAX_PARAMS_ENV, raising=False)
    assert max_params() == DEFAULT_MAX_PARAMS == 4_000_000_000
    for text, value in (("5e9", 5_000_000_000), ("5000000000", 5_000_000_000), (" 2.5e3 ", 2500), ("1_000", 1000)):
        monkeypatch.setenv(MAX_PARAMS_ENV, text)
        assert max_params() == value
    monkeypatch.setenv(MAX_PARAMS_ENV, str(count - 1))
    with pytest.raises(ConfigError, match=rf"{count:,} parameters.*limit of {count - 1:,}"):
        build_model(config)
    monkeypatch.setenv(MAX_PARAMS_ENV, str(count))
    assert build_model(config).num_params() == count


@pytest.mark.parametrize("text", ["abc", "0", "-5", "nan", "inf", "1.5", "1e400"])
def test_bad_max_params_value_names_the_variable(text, monkeypatch):
    monkeypatch.setenv(MAX_PARAMS_ENV, text)
    with pytest.raises(ConfigError, match=rf"^{MAX_PARAMS_ENV}='{text}' is invalid: expected a positive whole"):
        build_model(tiny_clip_config())


# -- 2. weights of the wrong dtype ----------------------------------------------------------------------------

def _rewrite(directory, key: str, dtype: torch.dtype) -> None:
    path = directory / "model.safetensors"
    state = load_file(str(path))
    state[key] = state[key].to(dtype)
    save_file(state, str(path))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_weights_are_refused_naming_file_key_and_dtypes(clip_model, tmp_path, dtype):
    vlprune.save(clip_model, tmp_path)
    _rewrite(tmp_path, "visual.pos_embed", dtype)
    with pytest.raises(CheckpointError) as info:
        vlprune.load(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "model.safetensors" in message
    assert f"visual.pos_embed: checkpoint {dtype} vs model torch.float32" in message


def test_half_precision_weights_still_load(clip_model, tmp_path):
    for dtype in (torch.float16, torch.bfloat16):
        vlprune.save(clip_model, tmp_path)
        _rewrite(tmp_path, "text.token_embed.weight", dtype)
        loaded = vlprune.load(tmp_path)
        assert loaded.text.token_embed.weight.dtype == torch.float32
        torch.testing.assert_close(loaded.text.token_embed.weight, clip_model.text.token_embed.weight.to(dtype).float())


def test_floating_values_for_an_integer_buffer_are_refused():
    module = nn.Module()
    module.register_buffer("step", torch.zeros((), dtype=torch.long))
    with pytest.raises(CheckpointError, match=r"ckpt\.safetensors.*step: checkpoint torch\.float32 vs model "
                                              r"torch\.int64"):
        load_state_strict(module, {"step": torch.tensor(3.7)}, "ckpt.safetensors")
    load_state_strict(module, {"step": torch.tensor(3, dtype=torch.int32)}, "ckpt.safetensors")
    assert module.step.item() == 3 and module.step.dtype == torch.long


# -- 3. bad JSON in checkpoint directories --------------------------------------------------------------------

JSON_FAULTS = {
    "number": (b"5", "holds a JSON number, expected a JSON object"),
    "array": (b"[1, 2]", "holds a JSON array, expected a JSON object"),
    "truncated": (b'{"format_version": 1, "kind": "cl', "is not valid JSON at line 1 column 31: Unterminated string"),
    "not-utf8": (b'{"kind": "\xff\xfe"}', "is not UTF-8 text (byte 0xff at offset 10)"),
    "huge-int": (b'{"a": ' + b"9" * 5000 + b"}", "is not valid JSON: Exceeds the limit"),
}


@pytest.mark.parametrize("fault", JSON_FAULTS)
def test_read_json_object_names_the_file_and_the_fault(fault, tmp_path):
    content, expected = JSON_FAULTS[fault]
    path = tmp_path / "thing.json"
    path.write_bytes(content)
    with pytest.raises(ConversionError) as info:
        read_json_object(path, "a thing", ConversionError)
    assert str(info.value).startswith(f"a thing {path} {expected}")
    assert "\n" not in str(info.value)


def test_read_json_object_missing_file_and_plain_error_type(tmp_path):
    with pytest.raises(ValueError, match=rf"^thing {tmp_path / 'absent.json'} cannot be read: No such file"):
        read_json_object(tmp_path / "absent.json", "thing")
    (tmp_path / "ok.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a UTF-8 byte-order mark is accepted
    assert read_json_object(tmp_path / "ok.json") == {"a": 1}


@pytest.mark.parametrize("fault", JSON_FAULTS)
def test_convert_directory_with_bad_config_json_is_one_conversion_error(fault, tmp_path):
    content, expected = JSON_FAULTS[fault]
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "config.json").write_bytes(content)
    with pytest.raises(ConversionError) as info:
        convert_directory(src, out)
    assert issubclass(ConversionError, ValueError)  # the CLI reports ValueError as a one-line user error
    assert str(info.value).startswith(f"config {src / 'config.json'} {expected}")
    assert "\n" not in str(info.value) and not out.exists()


@pytest.mark.parametrize("fault", ["number", "truncated", "not-utf8"])
def test_from_hf_with_bad_config_json_names_the_file(fault, tmp_path):
    content, expected = JSON_FAULTS[fault]
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ConversionError, match="^transformers config .*config.json " + re.escape(expected)):
        from_hf(tmp_path)


@pytest.mark.parametrize("content, expected", [
    (b"5", "open_clip_config.json holds a JSON number, expected a JSON object"),
    (b'{"model_cfg": ', "open_clip_config.json is not valid JSON at line 1 column 15: Expecting value"),
    (b"\x80", "open_clip_config.json is not UTF-8 text"),
    (b'{"model_cfg": 3}', "open_clip_config.json has no 'model_cfg' object"),
    (b'{"model_cfg": {}, "preprocess_cfg": [1]}', "open_clip_config.json: 'preprocess_cfg' must be a JSON object"),
])
def test_open_clip_directory_with_bad_config_json_names_the_file(content, expected, tmp_path):
    (tmp_path / "open_clip_config.json").write_bytes(content)
    with pytest.raises(ConversionError, match=re.escape(expected)) as info:
        from_open_clip(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConversionError, match="open_clip_config.json"):
        convert_directory(tmp_path, tmp_path / "out")


# -- 4. tokenizer.json pointers with missing or wrong fields --------------------------------------------------

@pytest.mark.parametrize("data, field, expected", [
    ({"type": "hf", "max_length": 77}, "dir", "'dir' is missing; expected the name of the folder"),
    ({"type": "hf", "dir": 5, "max_length": 77}, "dir", "'dir'=5 is invalid; expected the name of the folder"),
    ({"type": "hf", "dir": "nowhere", "max_length": 77}, "dir", "'dir'='nowhere': transformers tokenizer folder"),
    ({"type": "hf", "dir": "hf_tokenizer"}, "max_length", "'max_length' is missing; expected a positive int"),
    ({"type": "hf", "dir": "hf_tokenizer", "max_length": "77"}, "max_length", "'max_length'='77' is invalid"),
    ({"type": "open_clip", "name": None}, "context_length", "'context_length' is missing; expected a positive int"),
    ({"type": "open_clip", "context_length": -1}, "context_length", "'context_length'=-1 is invalid"),
    ({"type": "open_clip", "name": 3, "context_length": 77}, "name", "'name'=3 is invalid; expected an open_clip"),
    ({"type": "word", "max_length": 40}, "words", "'words' is missing; expected a list of word strings"),
    ({"type": "word", "words": ["a"], "max_length": 2.5}, "max_length", "'max_length'=2.5 is invalid; expected an"),
    ({"type": "word", "words": ["a", "a"], "max_length": 9}, "duplicated", "vocabulary has duplicated words"),
    ({"type": ["hf"]}, "type", "unknown tokenizer type ['hf']; expected word, hf or open_clip"),
])
def test_tokenizer_json_field_faults_name_file_and_field(data, field, expected, tmp_path):
    (tmp_path / "hf_tokenizer").mkdir()
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        load_any(path)
    message = str(info.value)
    assert message.startswith(f"tokenizer {path}") and field in message and expected in message
    assert "\n" not in message


@pytest.mark.parametrize("fault", ["number", "truncated", "not-utf8"])
def test_tokenizer_json_that_is_not_a_json_object_names_the_file(fault, tmp_path):
    content, expected = JSON_FAULTS[fault]
    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="^tokenizer .*tokenizer.json " + re.escape(expected)):
        load_any(path)


def test_saved_tokenizer_without_dir_through_load_tokenizer(clip_model, tmp_path):
    vlprune.save(clip_model, tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "hf", "max_length": 77}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: field 'dir' is missing"):
        vlprune.load_tokenizer(tmp_path)


def test_missing_hf_tokenizer_folder_is_one_fast_line_naming_it(clip_model, tmp_path):
    """Not a Hub lookup of ``<dir>/hf_tokenizer`` (54 s of offline retries before): local files only."""
    vlprune.save(clip_model, tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "hf", "dir": "hf_tokenizer", "max_length": 77}')
    started = time.monotonic()
    with pytest.raises(ValueError) as info:
        vlprune.load_tokenizer(tmp_path)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"tokenizer {tmp_path / 'tokenizer.json'}: field 'dir'")
    assert f"folder {tmp_path / 'hf_tokenizer'} is missing" in message and "vlprune convert" in message


def test_unreadable_hf_tokenizer_folder_is_one_line_naming_it(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "hf_tokenizer").mkdir()
    (tmp_path / "hf_tokenizer" / "tokenizer.json").write_text("not json")
    (tmp_path / "tokenizer.json").write_text('{"type": "hf", "dir": "hf_tokenizer", "max_length": 77}')
    with pytest.raises(ValueError) as info:
        load_any(tmp_path / "tokenizer.json")
    message = str(info.value)
    assert "\n" not in message and f"folder {tmp_path / 'hf_tokenizer'} cannot be read" in message


# -- 5. fuzz: any config JSON loads or raises ConfigError -----------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 3, 2**63, 10**30, 100_001, 1e-5, 0.5, 1e300]),
    st.sampled_from(["", "clip", "fusion", "bert", "gelu", "mean", "sincos", "squash", "round"]), st.text(max_size=6),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)
FIELD_VALUES = st.one_of(JSON_VALUES, st.lists(st.integers(-2, 70), min_size=2, max_size=3))
OWNERS = ("ModelConfig", "VisionConfig", "TextConfig")
BASES = [tiny_clip_config().to_dict(), tiny_fusion_config().to_dict()]
PATHS = sorted({(part, key) for base in BASES for part in ("vision", "text") for key in base[part]}
               | {("", key) for key in BASES[0]})
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def _loads_or_config_error(data: object) -> ModelConfig | None:
    """``from_dict`` and ``from_json`` agree: the same config, or each a one-line ConfigError."""
    try:
        config = ModelConfig.from_dict(data)
    except ConfigError as err:
        assert str(err).startswith(OWNERS) and "\n" not in str(err), str(err)
        config = None
    text = json.dumps(data)
    try:
        again = ModelConfig.from_json(text)
    except ConfigError as err:
        assert config is None and "\n" not in str(err), str(err)
        return None
    assert again == config
    return config


def _builds_or_refuses(config: ModelConfig | None) -> None:
    if config is None:
        return
    try:
        model = build_model(config)
    except ConfigError as err:
        assert "parameters" in str(err) and "\n" not in str(err)
        return
    assert model.num_params() == estimate_params(config) <= max_params()


@FUZZ
@given(base=st.sampled_from(BASES), path=st.sampled_from(PATHS), value=FIELD_VALUES)
def test_fuzz_every_config_field_loads_or_raises_config_error(base, path, value, monkeypatch):
    monkeypatch.setenv(MAX_PARAMS_ENV, "5e6")
    data = json.loads(json.dumps(base))
    part, key = path
    (data[part] if part else data)[key] = value
    _builds_or_refuses(_loads_or_config_error(data))


@FUZZ
@given(document=JSON_VALUES)
def test_fuzz_any_json_document_loads_or_raises_config_error(document, monkeypatch):
    monkeypatch.setenv(MAX_PARAMS_ENV, "1e6")  # the default config (about 5M parameters) is refused: stays fast
    _builds_or_refuses(_loads_or_config_error(document))
