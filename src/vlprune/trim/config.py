"""``SmartTrimConfig``: every knob of SmartTrim (trimmers, training recipe, baselines), validated on construction,
with a JSON round trip and a by-name registry like ``vlprune.reduce``'s."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from vlprune.config import ConfigError, ModelConfig, check_field_types, reject_unknown_fields, requirer
from vlprune.method_registry import register_method
from vlprune.reduce.base import check_ratio

TOKEN_SCORERS = ("cross", "local", "random", "off")
HEAD_SCORERS = ("learned", "random", "fixed", "off")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_require = requirer("SmartTrimConfig")


@register_method("adaptive", "learned per-input trimming of tokens and attention heads of a fusion model",
                 "SmartTrim, Wang et al. 2023")
@dataclass(frozen=True)
class SmartTrimConfig:
    """SmartTrim (Wang et al., 2023) on a fusion model.

    Targets are keep ratios γ (fraction of tokens / heads kept) per modality: ``target_vision`` for image tokens,
    ``target_text`` for text tokens (text encoder and fusion layers), ``target_heads`` for every attention module.
    ``tokens``: ``cross`` (local + cross-modal global score, eqs. 3-6), ``local`` (the Local baseline, no global
    term), ``random`` (the Random baseline), ``off``. ``heads``: ``learned`` (eq. 7), ``random``, ``fixed``
    (``fixed_heads``: kept head indices per module, e.g. Michel et al.'s gradient importance) or ``off``.
    ``keep_profile`` (module name -> keep fraction, as ``TrimRecord.ratio`` reports for each module of a trained
    SmartTrim's forward) sets the random baselines' rates; without it they keep the targets. ``curriculum``:
    fraction of the training steps over which the targets go linearly from 1.0 to their value (0: no curriculum).
    """

    method: ClassVar[str] = "smarttrim"
    target_vision: float = 0.5
    target_text: float = 0.7
    target_heads: float = 0.8
    temperature: float = 0.5
    curriculum: float = 0.5
    lambda_sd: float = 1.0
    lambda_cost: float = 20.0
    trimmer_dim: int = 32
    init_logit: float = 3.0
    trimmer_lr_scale: float = 10.0
    tokens: str = "cross"
    heads: str = "learned"
    keep_profile: dict[str, float] | None = None
    fixed_heads: dict[str, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("target_vision", "target_text", "target_heads"):
            check_ratio("SmartTrimConfig", name, getattr(self, name))
        _require(_number(self.temperature) and self.temperature > 0, "temperature", self.temperature,
                 "a number > 0 (Gumbel-sigmoid temperature τ)")
        _require(_number(self.curriculum) and 0 <= self.curriculum <= 1, "curriculum", self.curriculum,
                 "a fraction of training in [0, 1]")
        for name in ("lambda_sd", "lambda_cost", "init_logit", "trimmer_lr_scale"):
            value = getattr(self, name)
            _require(_number(value) and (value >= 0 or name == "init_logit"), name, value,
                     "a finite number" + ("" if name == "init_logit" else " >= 0"))
        _require(isinstance(self.trimmer_dim, int) and not isinstance(self.trimmer_dim, bool) and self.trimmer_dim > 0,
                 "trimmer_dim", self.trimmer_dim, "a positive int (width D' of the trimmers)")
        _require(self.tokens in TOKEN_SCORERS, "tokens", self.tokens, f"one of {TOKEN_SCORERS}")
        _require(self.heads in HEAD_SCORERS, "heads", self.heads, f"one of {HEAD_SCORERS}")
        _require((self.heads == "fixed") == (self.fixed_heads is not None), "fixed_heads", self.fixed_heads,
                 "kept head indices per module exactly when heads='fixed'")
        if self.keep_profile is not None:
            _require(isinstance(self.keep_profile, dict) and all(_number(v) and 0 <= v <= 1
                                                                 for v in self.keep_profile.values()),
                     "keep_profile", self.keep_profile, "a dict of module name -> keep fraction in [0, 1]")
        if self.fixed_heads is not None:
            object.__setattr__(self, "fixed_heads", {k: tuple(v) for k, v in self.fixed_heads.items()})

    def check(self, model: ModelConfig) -> None:
        """Raise ``ConfigError`` unless the model is a fusion model SmartTrim can trim."""
        if model.kind != "fusion":
            raise ConfigError(f"SmartTrim needs a fusion model (kind='fusion'), got kind={model.kind!r}")
        if self.fixed_heads is not None:
            for name, kept in self.fixed_heads.items():
                _require(all(isinstance(h, int) and h >= 0 for h in kept), "fixed_heads", {name: kept},
                         "non-negative head indices")

    @property
    def trains_trimmers(self) -> bool:
        """True when some trimmer has learnable scores (and so a cost loss)."""
        return self.tokens in ("cross", "local") or self.heads == "learned"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmartTrimConfig:
        data = {k: v for k, v in data.items() if k != "method"}
        reject_unknown_fields(cls, data)
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SmartTrimConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
