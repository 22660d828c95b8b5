"""Every field of every method config, fuzzed: a value gives a working method or one ConfigError that names
the field — never a TypeError from deep inside, never a silently broken run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.config import ConfigError
from vlprune.method_registry import list_methods, method_config
from vlprune.structured.config import PruneConfig
from vlprune.trim.config import SmartTrimConfig

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "abc", "faithful", "cross", "mope", "vision"]),
    st.lists(st.integers(-2, 14), max_size=5).map(tuple), st.lists(st.floats(-1, 2), max_size=4).map(tuple),
    st.dictionaries(st.sampled_from(["vision.0", "x"]), st.floats(-1, 2), max_size=2),
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "method"]


def _one_line_naming(err: ConfigError, cls: type) -> None:
    """One line that names a field as ``Class.field=value`` (the fuzzed one, or the default it conflicts with)."""
    message = str(err)
    owners = [c.__name__ for c in cls.__mro__]  # RandomConfig's fields are EViTConfig's
    assert "\n" not in message and any(f"{owner}.{name}=" in message for owner in owners for name in _fields(cls)), \
        message


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 12})).eval()


@pytest.mark.parametrize("name", list_methods())
def test_token_method_fields_fuzzed(name, model, tokenizer):
    ids, mask = tokenizer(["a big red circle at top left", "a blue cross"])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    guide = model.text_guide(ids, mask)
    cls = type(method_config(name))

    @FUZZ
    @given(field=st.sampled_from(_fields(cls)), value=ANY_VALUE)
    def check(field, value):
        try:
            vlprune.apply(model, method_config(name, **{field: value}))
        except ConfigError as err:
            _one_line_naming(err, cls)
            return
        try:
            out = model.encode_image(pixels, guide=guide) if model.reduction.text_guided else model.encode_image(pixels)
        finally:
            vlprune.apply(model, None)
        assert out.shape == (2, model.config.embed_dim) and torch.isfinite(out).all()

    check()


@pytest.mark.parametrize("cls", [SmartTrimConfig, PruneConfig], ids=lambda c: c.__name__)
def test_trim_and_prune_config_fields_fuzzed(cls):
    @FUZZ
    @given(field=st.sampled_from(_fields(cls)), value=ANY_VALUE)
    def check(field, value):
        try:
            config = cls(**{field: value})
        except ConfigError as err:
            _one_line_naming(err, cls)
            return
        assert dataclasses.replace(config) == config  # accepted values survive validation unchanged

    check()
