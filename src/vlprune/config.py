"""Model configs: frozen dataclasses, validated on construction, with a JSON round trip.

Every bad value raises ``ConfigError`` (a ``ValueError``) naming the field, the value and what is allowed.
Per-layer lists (``num_heads``, ``intermediate_size``, ``layer_map``) let structured pruning describe
non-uniform models; an int given for a per-layer field is broadcast to every layer. ``read_json_object`` reads
JSON files (configs, tokenizer pointers, converters' inputs) so that every fault is one line naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
RESIZE_MODES = ("shortest", "squash")
CROP_OFFSETS = ("floor", "round")
POS_EMBED_INITS = ("normal", "sincos")
IMAGE_POOLS = ("cls", "mean")
TEXT_POOLS = ("eot", "argmax")
MAX_LAYERS = 100_000  # per tower; bounds the per-layer tuples validation builds (model size: models.io.max_params)
MAX_SIZE = 2**63 - 1  # sizes and counts must fit torch's int64 shapes
_SHOW_LIMIT = 120
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


class ConfigError(ValueError):
    """A config value is out of range or inconsistent."""


def show(value: Any, limit: int = _SHOW_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a 100k-entry list or an int past
    Python's 4300-digit ``repr`` limit stays one short line."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _require(ok: bool, owner: str, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{owner}.{name}={show(value)} is invalid: expected {allowed}")


def requirer(owner: str) -> Callable[[bool, str, Any, str], None]:
    """``check(ok, name, value, allowed)`` for the configs of class ``owner``: ``ConfigError`` naming
    ``owner.name=value`` and what is allowed when ``ok`` is false (TrainConfig, PruneConfig, SmartTrimConfig)."""
    return lambda ok, name, value, allowed: _require(ok, owner, name, value, allowed)


def read_json_object(path: str | Path, what: str = "JSON file", error: type[ValueError] = ValueError
                     ) -> dict[str, Any]:
    """The JSON object stored in ``path``. An unreadable file, bytes that are not UTF-8, invalid JSON or a JSON
    value that is not an object raises one ``error`` naming ``what``, the file and the fault."""
    return read_json(path, what, error)


def read_json(path: str | Path, what: str = "JSON file", error: type[ValueError] = ValueError,
              expected: type[dict] | type[list] = dict, errors: str = "strict") -> Any:
    """``read_json_object`` for a JSON value of type ``expected`` (an object or an array). ``errors=
    'surrogateescape'`` keeps bytes that are not UTF-8 as lone surrogates, for a caller that names the entry
    holding them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as err:
        raise error(f"{what} {path} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    try:
        text = raw.decode("utf-8-sig", errors)
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") from None
    return parse_json(text, f"{what} {path}", error, expected)


def parse_json_object(text: str, where: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The JSON object ``text`` holds; invalid JSON or another JSON type is one ``error`` naming ``where``."""
    return parse_json(text, where, error)


def parse_json(text: str, where: str, error: type[ValueError] = ValueError,
               expected: type[dict] | type[list] = dict) -> Any:
    """``parse_json_object`` for a JSON value of type ``expected`` (an object or an array)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{where} is not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except (ValueError, RecursionError) as err:  # an int past 4300 digits, nesting too deep for the parser
        raise error(f"{where} is not valid JSON: {err}") from None
    if not isinstance(data, expected):
        raise error(f"{where} holds a JSON {json_type(data)}, expected a JSON {_JSON_TYPES[expected]}")
    return data


def json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value: object, array, string, number, boolean or null."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _per_layer(owner: str, name: str, value: Any, num_layers: int) -> tuple[int, ...]:
    """Broadcast an int to every layer, or check a list has one int per layer."""
    if isinstance(value, bool):
        _require(False, owner, name, value, "an int or a list of ints")
    if isinstance(value, int):
        _require(0 <= value <= MAX_SIZE, owner, name, value, "a non-negative int or a list of non-negative ints")
        return (value,) * num_layers
    _require(isinstance(value, (list, tuple)), owner, name, value, "an int or a list of ints")
    _require(len(value) == num_layers, owner, name, value, f"a list of {num_layers} entries (one per layer)")
    for v in value:
        _require(_is_int(v) and 0 <= v <= MAX_SIZE, owner, name, value, "non-negative ints")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """An int or float (not a bool) that is a finite float: huge ints and nan/inf are not."""
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _positive_int(owner: str, name: str, value: Any) -> None:
    _require(_is_int(value) and 0 < value <= MAX_SIZE, owner, name, value, "a positive int (below 2**63)")


def split_outside_brackets(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where no bracket is open (``[]``, ``()``, ``{}``): field annotations and ``--set``
    lists (``r=[1,2],x=3``); parts are stripped."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[({") - (char in "])}")
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
    return [p.strip() for p in parts + [text[start:]]]


def fits_annotation(value: Any, annotation: str) -> bool:
    """Whether ``value`` matches a field annotation written as a string: ``None``, ``bool``, ``int``, ``float``
    (finite), ``str``, ``tuple[X, ...]``, ``tuple[A, B]`` (a list passes too, as JSON gives), ``dict[K, V]`` and
    unions ``A | B`` of those."""
    options = split_outside_brackets(annotation, "|")
    if len(options) > 1:
        return any(fits_annotation(value, option) for option in options)
    kind = options[0]
    if kind.endswith("]"):
        outer, inner = kind[:-1].split("[", 1)
        args = split_outside_brackets(inner, ",")
        if outer == "tuple" and args[-1] == "...":
            return isinstance(value, (tuple, list)) and all(fits_annotation(v, args[0]) for v in value)
        if outer == "tuple":
            return (isinstance(value, (tuple, list)) and len(value) == len(args)
                    and all(map(fits_annotation, value, args)))
        if outer == "dict":
            return isinstance(value, dict) and all(fits_annotation(k, args[0]) and fits_annotation(v, args[1])
                                                   for k, v in value.items())
    checks = {"None": lambda v: v is None, "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
              "int": _is_int, "float": _is_finite}
    if kind not in checks:
        raise TypeError(f"field annotation {kind!r} is not supported by check_field_types")
    return checks[kind](value)


def check_field_types(config: Any) -> None:
    """Type-check every field of a dataclass config against its annotation (lists become tuples), so a wrong
    type is one ``ConfigError`` naming the field, not a ``TypeError`` from deep inside a run."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(config, f.name, value)
        if not fits_annotation(value, str(f.type)):
            raise ConfigError(f"{type(config).__name__}.{f.name}={show(value)} is invalid: expected {f.type} "
                              "(numbers finite)")


def reject_unknown_fields(cls: type, data: dict[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    extra = sorted(set(data) - known, key=str)
    if extra:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {show(extra)}; known fields are {sorted(known)}")


@dataclass(frozen=True)
class TowerConfig:
    """Fields shared by the vision and text transformers."""

    width: int = 128
    num_layers: int = 12
    head_dim: int = 32
    num_heads: tuple[int, ...] | int = 4
    intermediate_size: tuple[int, ...] | int = 512
    layer_map: tuple[int, ...] | None = None
    pre_norm: bool = True
    act: str = "gelu"
    layer_norm_eps: float = 1e-5
    qkv_bias: bool = True

    def _validate_tower(self) -> None:
        owner = type(self).__name__
        _positive_int(owner, "width", self.width)
        _positive_int(owner, "head_dim", self.head_dim)
        _require(_is_int(self.num_layers) and 0 <= self.num_layers <= MAX_LAYERS, owner, "num_layers",
                 self.num_layers, f"an int in [0, {MAX_LAYERS}]")
        object.__setattr__(self, "num_heads", _per_layer(owner, "num_heads", self.num_heads, self.num_layers))
        object.__setattr__(self, "intermediate_size",
                           _per_layer(owner, "intermediate_size", self.intermediate_size, self.num_layers))
        _require(self.layer_map is None or isinstance(self.layer_map, (list, tuple)), owner, "layer_map",
                 self.layer_map, "None or a list of original layer indices (one per layer)")
        layer_map = tuple(range(self.num_layers)) if self.layer_map is None else self.layer_map
        layer_map = _per_layer(owner, "layer_map", list(layer_map), self.num_layers)
        _require(list(layer_map) == sorted(set(layer_map)), owner, "layer_map", layer_map,
                 "strictly increasing original layer indices")
        object.__setattr__(self, "layer_map", layer_map)
        _require(self.act in ("gelu", "gelu_tanh", "quick_gelu", "relu"), owner, "act", self.act,
                 "one of gelu, gelu_tanh, quick_gelu, relu")
        for name in ("pre_norm", "qkv_bias"):
            _require(isinstance(getattr(self, name), bool), owner, name, getattr(self, name), "true or false")
        _require(isinstance(self.layer_norm_eps, float) and 0 < self.layer_norm_eps < 1, owner,
                 "layer_norm_eps", self.layer_norm_eps, "a float in (0, 1)")


@dataclass(frozen=True)
class VisionConfig(TowerConfig):
    """ViT: patch embedding, [CLS], learned position embeddings, blocks, final norm on [CLS].

    ``pos_embed_init``: how the learned position embeddings start. ``"normal"`` (std 0.02, as CLIP/ViT) or
    ``"sincos"``: the fixed 2-D sine-cosine table of MAE (half the channels encode the row, half the column;
    values in [-1, 1]), a position signal as strong as the patch embeddings from step 0. Only initialisation:
    a loaded checkpoint overrides it, so converted models are unaffected.

    ``pool``: which tokens the image embedding is projected from. ``"cls"`` (CLIP, ViT): the final [CLS] token;
    ``"mean"`` (timm's ``global_pool='avg'``): the mean of the final patch tokens, each weighted by the patches it
    stands for (token merging) and dropped where masked (token pruning); [CLS] still runs, as a token.
    """

    image_size: int = 64
    patch_size: int = 8
    channels: int = 3
    ln_pre: bool = False
    patch_bias: bool = True
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resize: str = "shortest"   # preprocessing: "shortest" edge + centre crop (CLIP) or "squash" to a square (BLIP)
    crop_offset: str = "floor"  # centre-crop offset: "floor" (HF image processors) or "round" (torchvision, open_clip)
    pos_embed_init: str = "normal"
    pool: str = "cls"

    def __post_init__(self) -> None:
        self._validate_tower()
        owner = "VisionConfig"
        _positive_int(owner, "image_size", self.image_size)
        _positive_int(owner, "patch_size", self.patch_size)
        _positive_int(owner, "channels", self.channels)
        _require(self.image_size % self.patch_size == 0, owner, "patch_size", self.patch_size,
                 f"a divisor of image_size={self.image_size}")
        for name in ("ln_pre", "patch_bias"):
            _require(isinstance(getattr(self, name), bool), owner, name, getattr(self, name), "true or false")
        for name in ("image_mean", "image_std"):
            _require(isinstance(getattr(self, name), (list, tuple)), owner, name, getattr(self, name),
                     f"{self.channels} numbers (one per channel)")
            value = tuple(getattr(self, name))
            _require(len(value) == self.channels and all(map(_is_finite, value)), owner, name, value,
                     f"{self.channels} finite numbers (one per channel)")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        _require(all(v > 0 for v in self.image_std), owner, "image_std", self.image_std, "positive numbers")
        _require(self.resize in RESIZE_MODES, owner, "resize", self.resize, f"one of {RESIZE_MODES}")
        _require(self.crop_offset in CROP_OFFSETS, owner, "crop_offset", self.crop_offset, f"one of {CROP_OFFSETS}")
        _require(self.pos_embed_init in POS_EMBED_INITS, owner, "pos_embed_init", self.pos_embed_init,
                 f"one of {POS_EMBED_INITS}")
        _require(self.pool in IMAGE_POOLS, owner, "pool", self.pool, f"one of {IMAGE_POOLS}")
        if self.pos_embed_init == "sincos":
            _require(self.width % 4 == 0, owner, "width", self.width, "a multiple of 4 (pos_embed_init='sincos')")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig(TowerConfig):
    """Text transformer: ``flavour='clip'`` (causal, pooled at the EOT token, pre-LN) or ``'bert'``
    (bidirectional, pooled at [CLS], post-LN, embedding LayerNorm).

    ``pool`` (flavour 'clip'): ``'eot'`` pools at the first ``eot_token_id`` (without one: the last unmasked
    token, or the highest token id when no mask is given); ``'argmax'`` pools at the highest token id whatever the
    mask (transformers' legacy ``eos_token_id == 2`` configs, open_clip's ``pool_type='argmax'``).
    ``cross_attention_layers`` lists the layers that also attend to image tokens (fusion layers).
    ``fusion_from_embeddings`` (BLIP): the unimodal encoder runs every layer without cross-attention, and the
    multimodal encoder runs every layer again, from the token embeddings, with it (every layer is then a fusion
    layer). Off (ALBEF): the fusion layers continue from the unimodal encoder's output.
    """

    flavour: str = "clip"
    vocab_size: int = 1000
    max_length: int = 32
    pad_token_id: int = 0
    eot_token_id: int | None = None
    pool: str = "eot"
    cross_attention_layers: tuple[int, ...] = ()
    encoder_width: int | None = None
    fusion_from_embeddings: bool = False

    def __post_init__(self) -> None:
        self._validate_tower()
        owner = "TextConfig"
        _require(self.flavour in ("clip", "bert"), owner, "flavour", self.flavour, "'clip' or 'bert'")
        _positive_int(owner, "vocab_size", self.vocab_size)
        _positive_int(owner, "max_length", self.max_length)
        _require(_is_int(self.pad_token_id) and 0 <= self.pad_token_id < self.vocab_size, owner, "pad_token_id",
                 self.pad_token_id, f"an id in [0, {self.vocab_size})")
        if self.eot_token_id is not None:
            _require(_is_int(self.eot_token_id) and 0 <= self.eot_token_id < self.vocab_size, owner,
                     "eot_token_id", self.eot_token_id, f"None or an id in [0, {self.vocab_size})")
        _require(self.pool in TEXT_POOLS, owner, "pool", self.pool, f"one of {TEXT_POOLS}")
        _require(self.flavour == "clip" or self.pool == "eot", owner, "pool", self.pool,
                 "'eot' for flavour='bert' (pooled at [CLS])")
        _require(isinstance(self.cross_attention_layers, (list, tuple)), owner, "cross_attention_layers",
                 self.cross_attention_layers, "a list of layer indices")
        cross = tuple(self.cross_attention_layers)
        _require(all(_is_int(i) and 0 <= i < self.num_layers for i in cross) and len(set(cross)) ==
                 len(cross), owner, "cross_attention_layers", cross,
                 f"distinct layer indices in [0, {self.num_layers})")
        object.__setattr__(self, "cross_attention_layers", tuple(sorted(cross)))
        _require(self.encoder_width is None or (_is_int(self.encoder_width) and 0 < self.encoder_width <= MAX_SIZE),
                 owner, "encoder_width", self.encoder_width, "None or a positive int (the vision width)")
        if cross:
            _require(self.flavour == "bert", owner, "cross_attention_layers", cross,
                     "empty for flavour='clip' (cross-attention needs the BERT-style encoder)")
            _require(self.encoder_width is not None, owner, "encoder_width", self.encoder_width,
                     "the vision width (a positive int) when cross_attention_layers is set")
        _require(isinstance(self.fusion_from_embeddings, bool), owner, "fusion_from_embeddings",
                 self.fusion_from_embeddings, "true or false")
        if self.fusion_from_embeddings:
            _require(cross == tuple(range(self.num_layers)), owner, "cross_attention_layers", cross,
                     f"every layer (0..{self.num_layers - 1}) when fusion_from_embeddings is set")

    @property
    def fusion_start(self) -> int:
        """First fusion layer (ALBEF split): layers before it are the text-only encoder."""
        return self.cross_attention_layers[0] if self.cross_attention_layers else self.num_layers

    @property
    def unimodal_layers(self) -> int:
        """Layers of the unimodal text pass: all of them (BLIP, CLIP) or those before the first fusion layer."""
        return self.num_layers if self.fusion_from_embeddings else self.fusion_start


_KINDS = ("clip", "fusion")


@dataclass(frozen=True)
class ModelConfig:
    """A whole model: ``kind='clip'`` (dual encoder, ITC) or ``'fusion'`` (ALBEF-style: ITC + ITM + VQA).

    Fusion models run the text layers before ``text.fusion_start`` as the unimodal text encoder and the
    remaining layers (with cross-attention to image tokens) as the multimodal encoder.
    """

    kind: str = "clip"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 128
    init_logit_scale: float = 2.6592  # log(1/0.07), as CLIP
    num_answers: int = 0              # VQA classifier size (fusion only; 0 = no VQA head)
    proj_bias: bool = False           # image/text projections with a bias (BLIP)
    name: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        owner = "ModelConfig"
        _require(self.kind in _KINDS, owner, "kind", self.kind, f"one of {_KINDS}")
        _require(isinstance(self.vision, VisionConfig), owner, "vision", type(self.vision).__name__,
                 "a VisionConfig")
        _require(isinstance(self.text, TextConfig), owner, "text", type(self.text).__name__, "a TextConfig")
        _positive_int(owner, "embed_dim", self.embed_dim)
        _require(_is_finite(self.init_logit_scale), owner, "init_logit_scale", self.init_logit_scale,
                 "a finite number")
        _require(isinstance(self.name, str), owner, "name", self.name, "a string")
        _require(isinstance(self.proj_bias, bool), owner, "proj_bias", self.proj_bias, "true or false")
        _require(_is_int(self.num_answers) and 0 <= self.num_answers <= MAX_SIZE, owner, "num_answers",
                 self.num_answers, "an int >= 0 (below 2**63)")
        _check_format(self.format_version)
        if self.kind == "fusion":
            _require(bool(self.text.cross_attention_layers), owner, "text.cross_attention_layers",
                     self.text.cross_attention_layers, "at least one fusion layer for kind='fusion'")
            _require(self.text.encoder_width == self.vision.width, owner, "text.encoder_width",
                     self.text.encoder_width, f"the vision width {self.vision.width}")
        else:
            _require(self.num_answers == 0, owner, "num_answers", self.num_answers, "0 for kind='clip'")
            _require(not self.text.cross_attention_layers, owner, "text.cross_attention_layers",
                     self.text.cross_attention_layers, "empty for kind='clip'")

    # -- JSON round trip ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"ModelConfig: expected a JSON object, got {type(data).__name__}")
        if "format_version" in data:  # checked first: a newer format may also bring fields this version lacks
            _check_format(data["format_version"])
        reject_unknown_fields(cls, data)
        data = dict(data)
        for key, sub in (("vision", VisionConfig), ("text", TextConfig)):
            if key in data:
                if not isinstance(data[key], dict):
                    raise ConfigError(f"ModelConfig.{key}: expected a JSON object, got {show(data[key])}")
                reject_unknown_fields(sub, data[key])
                data[key] = sub(**_tuples(data[key]))
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ModelConfig:
        """A config from JSON text (a string starting with ``{`` or ``[``) or from a file."""
        if isinstance(text_or_path, str) and text_or_path.lstrip().startswith(("{", "[")):
            return cls.from_dict(parse_json_object(text_or_path, f"config {show(text_or_path, 80)}", ConfigError))
        return cls.from_dict(read_json_object(text_or_path, "config", ConfigError))


def _check_format(version: Any) -> None:
    _require(_is_int(version) and version == FORMAT_VERSION, "ModelConfig", "format_version", version,
             f"{FORMAT_VERSION} (this vlprune reads format {FORMAT_VERSION}; upgrade vlprune to read newer "
             "checkpoints)")


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
