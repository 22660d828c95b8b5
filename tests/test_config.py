"""Model configs: every bad value is a ConfigError naming the field; JSON round trips are exact."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.tiny import tiny_clip_config, tiny_fusion_config, tiny_vision
from vlprune import ConfigError, ModelConfig, TextConfig, VisionConfig
from vlprune.config import FORMAT_VERSION

# -- bad values -----------------------------------------------------------------------------------------

VISION_BAD = [
    ("num_heads", {"num_layers": 2, "num_heads": [4, 4, 4]}),        # list of the wrong length
    ("num_heads", {"num_layers": 2, "num_heads": [4, -1]}),
    ("num_heads", {"num_heads": -2}),                                 # a negative int is not broadcast
    ("num_heads", {"num_heads": True}),
    ("num_heads", {"num_heads": "4"}),
    ("intermediate_size", {"intermediate_size": -64}),
    ("intermediate_size", {"num_layers": 2, "intermediate_size": [64, -1]}),
    ("intermediate_size", {"num_layers": 2, "intermediate_size": [64]}),
    ("patch_size", {"image_size": 30, "patch_size": 8}),              # image_size not divisible by patch
    ("image_size", {"image_size": 0}),
    ("width", {"width": 0}),
    ("head_dim", {"head_dim": 2.5}),
    ("num_layers", {"num_layers": -1}),
    ("layer_map", {"num_layers": 2, "layer_map": [0, 1, 2]}),         # wrong length
    ("layer_map", {"num_layers": 3, "layer_map": [0, 2, 2]}),         # not strictly increasing
    ("layer_map", {"num_layers": 2, "layer_map": [3, 1]}),
    ("layer_map", {"num_layers": 2, "layer_map": [-1, 1]}),
    ("layer_map", {"num_layers": 1, "layer_map": 5}),                 # not a list
    ("act", {"act": "swish"}),
    ("layer_norm_eps", {"layer_norm_eps": 0.0}),
    ("image_mean", {"image_mean": (0.5, 0.5)}),
    ("image_mean", {"image_mean": 0.5}),
    ("image_std", {"image_std": (0.5, 0.0, 0.5)}),
    ("ln_pre", {"ln_pre": "false"}),
    ("pre_norm", {"pre_norm": "yes"}),
    ("pos_embed_init", {"pos_embed_init": "rope"}),
    ("pool", {"pool": "max"}),
    ("width", {"width": 130, "pos_embed_init": "sincos"}),           # sin-cos needs width % 4 == 0
]


@pytest.mark.parametrize("field, kwargs", VISION_BAD)
def test_vision_config_rejects(field, kwargs):
    with pytest.raises(ConfigError, match=rf"VisionConfig\.{field}="):
        VisionConfig(**kwargs)


TEXT_BAD = [
    ("flavour", {"flavour": "gpt"}),                                                     # unknown flavour
    ("cross_attention_layers", {"flavour": "clip", "num_layers": 2, "cross_attention_layers": (1,),
                                "encoder_width": 32}),                                   # cross-attn on clip
    ("cross_attention_layers", {"flavour": "bert", "num_layers": 2, "cross_attention_layers": (2,),
                                "encoder_width": 32}),                                   # out of range
    ("cross_attention_layers", {"flavour": "bert", "num_layers": 2, "cross_attention_layers": (1, 1),
                                "encoder_width": 32}),
    ("cross_attention_layers", {"flavour": "bert", "num_layers": 2, "cross_attention_layers": 1,
                                "encoder_width": 32}),
    ("encoder_width", {"flavour": "bert", "num_layers": 2, "cross_attention_layers": (1,)}),
    ("pad_token_id", {"vocab_size": 10, "pad_token_id": 10}),
    ("pad_token_id", {"vocab_size": 10, "pad_token_id": "0"}),
    ("eot_token_id", {"vocab_size": 10, "eot_token_id": -1}),
    ("pool", {"pool": "mean"}),
    ("pool", {"flavour": "bert", "pool": "argmax"}),                                       # bert pools at [CLS]
    ("vocab_size", {"vocab_size": 0}),
    ("max_length", {"max_length": 0}),
]


@pytest.mark.parametrize("field, kwargs", TEXT_BAD)
def test_text_config_rejects(field, kwargs):
    with pytest.raises(ConfigError, match=rf"TextConfig\.{field}="):
        TextConfig(**kwargs)


def test_text_config_json_without_pool_loads_with_todays_pooling():
    """Configs written before ``TextConfig.pool`` existed (the bundled ones included) load unchanged."""
    data = ModelConfig().to_dict()
    del data["text"]["pool"]
    assert ModelConfig.from_dict(data).text.pool == "eot" and ModelConfig.from_dict(data) == ModelConfig()


def test_model_config_rejects():
    clip, fusion = tiny_clip_config(), tiny_fusion_config()
    cases = [
        ("kind", lambda: ModelConfig(kind="siamese")),
        ("text.cross_attention_layers",                         # fusion without cross layers
         lambda: ModelConfig(kind="fusion", vision=clip.vision, text=TextConfig(flavour="bert"))),
        ("text.encoder_width",
         lambda: ModelConfig(kind="fusion", vision=tiny_vision(width=48), text=fusion.text)),
        ("text.cross_attention_layers", lambda: ModelConfig(kind="clip", vision=fusion.vision, text=fusion.text)),
        ("num_answers", lambda: ModelConfig(kind="clip", num_answers=3)),
        ("num_answers", lambda: ModelConfig(kind="fusion", vision=fusion.vision, text=fusion.text, num_answers=-1)),
        ("embed_dim", lambda: ModelConfig(embed_dim=0)),
        ("init_logit_scale", lambda: ModelConfig(init_logit_scale=math.nan)),
        ("vision", lambda: ModelConfig(vision={"width": 32})),
        ("format_version", lambda: ModelConfig(format_version=FORMAT_VERSION + 1)),
    ]
    for field, make in cases:
        with pytest.raises(ConfigError, match=rf"ModelConfig\.{field}="):
            make()


def test_config_error_is_a_value_error_with_value_and_allowed_range():
    with pytest.raises(ValueError) as info:
        VisionConfig(num_layers=2, num_heads=[4, 4, 4])
    message = str(info.value)
    assert "[4, 4, 4]" in message and "2 entries" in message


def test_future_format_version_says_upgrade_even_with_new_fields():
    data = tiny_clip_config().to_dict()
    data["format_version"] = 99
    data["a_field_from_the_future"] = 1   # a newer format would also bring new fields
    with pytest.raises(ConfigError, match="format_version=99.*upgrade vlprune"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("where", ["top", "vision", "text"])
def test_unknown_json_keys_are_named(where):
    data = tiny_fusion_config().to_dict()
    (data if where == "top" else data[where])["num_haeds"] = 4
    with pytest.raises(ConfigError, match="unknown field.*num_haeds"):
        ModelConfig.from_dict(data)


def test_bad_json_text_and_types():
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json('{"kind": "clip",')
    with pytest.raises(ConfigError, match="expected a JSON object"):
        ModelConfig.from_dict([1, 2])
    with pytest.raises(ConfigError, match="ModelConfig.vision"):
        ModelConfig.from_dict({"vision": 3})


def test_bad_value_inside_json_names_the_nested_field():
    data = tiny_clip_config().to_dict()
    data["text"]["num_heads"] = [4]  # 2 layers
    with pytest.raises(ConfigError, match=r"TextConfig\.num_heads="):
        ModelConfig.from_json(json.dumps(data))


# -- broadcasting and round trips -----------------------------------------------------------------------

def test_int_broadcasts_to_a_per_layer_tuple():
    cfg = VisionConfig(num_layers=3, num_heads=4, intermediate_size=96)
    assert cfg.num_heads == (4, 4, 4)
    assert cfg.intermediate_size == (96, 96, 96)
    assert cfg.layer_map == (0, 1, 2)
    listed = VisionConfig(num_layers=3, num_heads=[4, 0, 2], intermediate_size=[1, 2, 3], layer_map=[0, 5, 11])
    assert listed.num_heads == (4, 0, 2) and isinstance(listed.num_heads, tuple)
    assert listed.layer_map == (0, 5, 11)
    assert VisionConfig(num_layers=0).num_heads == ()


def test_json_round_trip_with_per_layer_lists(tmp_path):
    cfg = tiny_fusion_config(vision={"num_layers": 3, "num_heads": [4, 0, 2], "intermediate_size": [64, 8, 0],
                                     "layer_map": [0, 4, 7], "image_mean": (0.1, 0.2, 0.3)},
                             text={"num_heads": [1, 2, 3], "intermediate_size": [0, 5, 64], "layer_map": [1, 2, 9]},
                             name="pruned ünïcode")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "config.json")
    again = ModelConfig.from_json(tmp_path / "config.json")
    assert again == cfg
    assert again.vision.num_heads == (4, 0, 2) and again.text.layer_map == (1, 2, 9)
    assert again.text.cross_attention_layers == (2,)
    assert ModelConfig.from_json(str(tmp_path / "config.json")) == cfg


def test_non_utf8_config_file_is_a_config_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="UTF-8"):
        ModelConfig.from_json(path)


# -- property: any valid small config round-trips through JSON exactly ----------------------------------

def _per_layer(n: int, low: int, high: int):
    return st.one_of(st.integers(low, high), st.lists(st.integers(low, high), min_size=n, max_size=n))


@st.composite
def tower_kwargs(draw, max_layers: int = 4) -> dict:
    n = draw(st.integers(0, max_layers))
    layer_map = draw(st.one_of(st.none(), st.lists(st.integers(0, 30), min_size=n, max_size=n, unique=True)
                               .map(sorted)))
    return {"width": draw(st.integers(1, 64)), "num_layers": n, "head_dim": draw(st.integers(1, 16)),
            "num_heads": draw(_per_layer(n, 0, 8)), "intermediate_size": draw(_per_layer(n, 0, 256)),
            "layer_map": layer_map, "pre_norm": draw(st.booleans()),
            "act": draw(st.sampled_from(["gelu", "gelu_tanh", "quick_gelu", "relu"])),
            "layer_norm_eps": draw(st.floats(1e-12, 0.5)), "qkv_bias": draw(st.booleans())}


@st.composite
def model_configs(draw) -> ModelConfig:
    patch = draw(st.integers(1, 16))
    finite = st.floats(-10, 10, allow_nan=False)
    vision = VisionConfig(**draw(tower_kwargs()), image_size=patch * draw(st.integers(1, 8)), patch_size=patch,
                          ln_pre=draw(st.booleans()), patch_bias=draw(st.booleans()),
                          pos_embed_init="normal", pool=draw(st.sampled_from(["cls", "mean"])),
                          image_mean=tuple(draw(finite) for _ in range(3)),
                          image_std=tuple(draw(st.floats(0.01, 10)) for _ in range(3)))
    kind = draw(st.sampled_from(["clip", "fusion"]))
    text = draw(tower_kwargs())
    if kind == "fusion" and text["num_layers"] == 0:
        text = {**text, "num_layers": 1, "num_heads": 1, "intermediate_size": 4, "layer_map": None}
    vocab = draw(st.integers(2, 5000))
    flavour = "bert" if kind == "fusion" else draw(st.sampled_from(["clip", "bert"]))
    text_cfg = TextConfig(
        **text, flavour=flavour, vocab_size=vocab,
        max_length=draw(st.integers(1, 77)), pad_token_id=draw(st.integers(0, vocab - 1)),
        eot_token_id=draw(st.one_of(st.none(), st.integers(0, vocab - 1))),
        pool=draw(st.sampled_from(["eot", "argmax"])) if flavour == "clip" else "eot",
        cross_attention_layers=tuple(draw(st.lists(st.integers(0, text["num_layers"] - 1), min_size=1,
                                                   unique=True))) if kind == "fusion" else (),
        encoder_width=vision.width if kind == "fusion" else draw(st.one_of(st.none(), st.integers(1, 64))))
    return ModelConfig(kind=kind, vision=vision, text=text_cfg, embed_dim=draw(st.integers(1, 512)),
                       init_logit_scale=draw(finite), num_answers=draw(st.integers(0, 50)) if kind == "fusion" else 0,
                       name=draw(st.text(max_size=12)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_configs())
def test_property_any_valid_config_round_trips_through_json(cfg):
    text = cfg.to_json()
    again = ModelConfig.from_json(text)
    assert again == cfg
    assert again.to_json() == text
    assert ModelConfig.from_dict(json.loads(text)) == cfg
