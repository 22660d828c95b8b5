"""Every method in one registry, like peft's ``PEFT_TYPE_TO_CONFIG_MAPPING``: (kind, name) -> its config class.

Kinds: ``token`` (vision-token reduction: ELIP, TRIPS, EViT, ToMe, random; ``vlprune.apply``), ``text-token``
(text-token pruning), ``adaptive`` (SmartTrim's learned trimming; ``vlprune train --method smarttrim``) and
``structured`` (MoPE-CLIP and the module rankings it is compared with; ``vlprune prune``). A config is plain,
validated data; the code that attaches it lives beside it in its package. Each subcommand asks for the kinds it
runs, and every one reads the same syntax: ``--method NAME --set KEY=VALUE`` (or ``NAME:key=value,...``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from vlprune.config import ConfigError, reject_unknown_fields, split_outside_brackets

KINDS = ("token", "text-token", "adaptive", "structured")


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: its config class, what it is, the paper, and field values the name presets
    (the structured rankings share ``PruneConfig`` and differ by ``method``)."""

    kind: str
    name: str
    config: type
    summary: str
    paper: str
    preset: dict[str, Any] = field(default_factory=dict)

    def build(self, **values: Any) -> Any:
        """The config with ``values`` (a field the name presets cannot be set)."""
        reject_unknown_fields(self.config, values)
        clash = sorted(set(values) & set(self.preset))
        if clash:
            raise ConfigError(f"{self.name}: {clash} is set by the method name; choose another --method instead")
        return self.config(**{**values, **self.preset})

    def defaults(self) -> dict[str, Any]:
        """Each settable field's default, from the config class itself."""
        out = {}
        for f in fields(self.config):
            if f.init and f.name not in self.preset:
                default = f.default if f.default is not MISSING else (
                    f.default_factory() if f.default_factory is not MISSING else "(required)")
                out[f.name] = default
        return out


_REGISTRY: dict[tuple[str, str], MethodEntry] = {}


def register_method(kind: str, summary: str, paper: str, name: str | None = None,
                    **preset: Any) -> Callable[[type], type]:
    """Class decorator: register a config class under ``kind`` and ``name`` (default: its ``method`` attribute)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")

    def decorate(cls: type) -> type:
        key = (kind, name or cls.method)
        _REGISTRY[key] = MethodEntry(kind, key[1], cls, summary, paper, dict(preset))
        return cls

    return decorate


def entries(kinds: Sequence[str] = KINDS) -> list[MethodEntry]:
    """Registered methods of ``kinds``, by kind then name (``import vlprune`` registers them all)."""
    return sorted((e for e in _REGISTRY.values() if e.kind in kinds), key=lambda e: (KINDS.index(e.kind), e.name))


def list_methods(kinds: Sequence[str] = ("token",)) -> list[str]:
    return [e.name for e in entries(kinds)]


def method_entry(name: str, kinds: Sequence[str] = ("token",)) -> MethodEntry:
    found = [e for e in entries(kinds) if e.name == name]
    if not found:
        raise ConfigError(f"unknown method {name!r} here; known: {', '.join(list_methods(kinds))} (vlprune info "
                          "--methods lists every method with its fields)")
    return found[0]


def method_config(name: str, kinds: Sequence[str] = ("token",), **values: Any) -> Any:
    """Build a method's config by name (``--method NAME --set key=value``)."""
    return method_entry(name, kinds).build(**values)


def parse_value(raw: str) -> Any:
    """A command-line value: JSON where it parses (lists become tuples), else the string itself."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(value, list) else value


def split_settings(text: str) -> list[str]:
    """``r=[1,2],x=3`` -> ["r=[1,2]", "x=3"] (commas inside brackets stay)."""
    return [p for p in split_outside_brackets(text, ",") if p]


def parse_settings(pairs: Sequence[str], where: str) -> dict[str, Any]:
    """``["keep_ratio=0.5", "layers=[3,6]"]`` -> {"keep_ratio": 0.5, "layers": (3, 6)}; ``where`` names the
    source in the error message."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: {pair!r} is not key=value")
        values[key.strip()] = parse_value(raw)
    return values


def parse_method(spec: str, settings: Sequence[str] = (), kinds: Sequence[str] = ("token",)) -> tuple[str, Any]:
    """``none`` / ``tome:r=4`` / ``evit:layers=[3,6],keep_ratio=0.5`` plus ``--set`` ``settings`` -> (the spec
    with every setting, config or None)."""
    name, _, rest = spec.partition(":")
    pairs = split_settings(rest) + list(settings)
    label = name + (":" + ",".join(pairs) if pairs else "")
    if name == "none":
        if pairs:
            raise ConfigError(f"method {label!r}: 'none' takes no settings")
        return label, None
    where = f"method {label!r} (expected NAME or NAME:key=value,key=value)"
    return label, method_config(name, kinds, **parse_settings(pairs, where))


def describe_methods() -> str:
    """Every registered method with its fields and defaults (``vlprune info --methods``)."""
    lines = []
    for kind in KINDS:
        lines.append(f"{kind}:")
        for entry in entries((kind,)):
            preset = "".join(f" ({k}={v})" for k, v in entry.preset.items())
            lines.append(f"  {entry.name}{preset} — {entry.summary} [{entry.paper}]")
            for key, value in entry.defaults().items():
                lines.append(f"      {key} = {json.dumps(value) if not isinstance(value, str) else value}")
    return "\n".join(lines)
