"""Token reduction inside the vision encoder: a config dataclass per method, a registry, and one call.

``vlprune.apply(model, config)`` installs a method through the hook points of ``models/layers.py``;
``vlprune.apply(model, None)`` removes it and leaves exactly the base model. Every method reports its exact
token schedule (tokens entering attention and MLP of each layer), which the FLOP counter uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch

from vlprune.config import ConfigError, VisionConfig, check_field_types
from vlprune.models.flops import model_gflops
from vlprune.models.layers import AttachedMethods, TokenState


@dataclass(frozen=True)
class ReduceConfig:
    """Base of every method config: frozen plain data. Subclasses define ``method``, ``check`` and the cost model
    (``schedule``, ``extra_macs``, ``text_guided``); the code that installs the method is a function
    ``attach_NAME(model, config)`` beside the config, named by ``register_attach``."""

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_field_types(self)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    def spec(self) -> str:
        """The command-line form ``NAME:key=value,...`` that ``parse_method`` reads back to this config."""
        settings = ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in asdict(self).items())
        return f"{self.method}:{settings}" if settings else self.method

    @property
    def text_guided(self) -> bool:
        """True if the selection needs the text the image is paired with (ELIP with λ < 1, TRIPS)."""
        return False

    def check(self, vision: VisionConfig) -> None:
        """Raise ``ConfigError`` if the config does not fit this vision tower."""

    def schedule(self, vision: VisionConfig) -> list[tuple[int, int]]:
        """Tokens entering (attention, MLP) of every layer."""
        n = vision.num_patches + 1
        return [(n, n)] * vision.num_layers

    def extra_macs(self, vision: VisionConfig) -> int:
        """Multiply-accumulates spent outside the scheduled layers (e.g. ELIP's guide pass), per image."""
        return 0


def check_ratio(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value <= 1.0):
        raise ConfigError(f"{owner}.{name}={value!r} is invalid: expected a keep ratio in (0, 1]")


def check_layers(owner: str, name: str, layers: tuple[int, ...], num_layers: int) -> None:
    if not all(isinstance(i, int) and 0 <= i < num_layers for i in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"{owner}.{name}={layers!r} is invalid: expected distinct layer indices in "
                          f"[0, {num_layers}) for this {num_layers}-layer vision tower")


def kept_count(keep_ratio: float, patches: int) -> int:
    """EViT's rule: ceil(ratio x current non-[CLS] tokens), at least 1."""
    return max(1, math.ceil(keep_ratio * patches))


Attach = Callable[[Any, Any], None]
"""``attach(model, config)``: install a method's hooks on ``model`` (through ``models/layers.py``'s hook points)."""

_ATTACH: dict[type, Attach] = {}


def register_attach(cls: type, attach: Attach) -> None:
    """Make ``attach`` the function ``vlprune.apply`` installs configs of ``cls`` with (and of its subclasses that
    register none of their own)."""
    _ATTACH[cls] = attach


def attach_function(config: Any) -> Attach:
    """The attach function registered for ``config``'s class or its nearest base class."""
    for cls in type(config).__mro__:
        if cls in _ATTACH:
            return _ATTACH[cls]
    raise TypeError(f"no attach function is registered for {type(config).__name__}: call "
                    "vlprune.reduce.base.register_attach(ConfigClass, attach_function)")


def _attach_nothing(model: Any, config: ReduceConfig) -> None:
    """The base config installs nothing: the base model."""


register_attach(ReduceConfig, _attach_nothing)


def set_attached(model: Any, **changes: Any) -> None:
    """Change fields of ``model.attached`` (an ``AttachedMethods``; None once no method is left on)."""
    handle = replace(getattr(model, "attached", None) or AttachedMethods(), **changes)
    model.attached = None if handle.image is None and handle.text is None else handle


def detach(model: Any) -> None:
    """Remove the image-token method: the image tower computes exactly as the base tower again (text-token pruning
    stays)."""
    model.visual.reset_hooks()
    set_attached(model, image=None, text_guided_image=False)


def apply(model: Any, config: ReduceConfig | None) -> Any:
    """Turn ``config``'s method on (replacing any other), or off with ``None``. Returns ``model``."""
    detach(model)
    if config is None:
        return model
    if not isinstance(config, ReduceConfig):
        raise TypeError(f"apply() takes a ReduceConfig (e.g. ToMeConfig(r=8)) or None, got {type(config).__name__}")
    config.check(model.config.vision)
    attach_function(config)(model, config)
    set_attached(model, image=config, text_guided_image=config.text_guided)
    return model


def token_schedule(model: Any) -> list[tuple[int, int]]:
    """The schedule of the method on ``model`` (the base schedule when none)."""
    config = model.reduction or ReduceConfig()
    return config.schedule(model.config.vision)


def method_gflops(config: Any, method: ReduceConfig | None, text_length: int | None = None) -> dict[str, float]:
    """``model_gflops`` of a model config with ``method`` (``None``: the base): its token schedule and its extra
    passes."""
    method = method or ReduceConfig()
    return model_gflops(config, text_length, method.schedule(config.vision), method.extra_macs(config.vision))


def reduced_gflops(model: Any, text_length: int | None = None) -> dict[str, float]:
    """``method_gflops`` of the method on ``model``."""
    return method_gflops(model.config, model.reduction, text_length)


def vision_gflops(model: Any) -> float:
    """Analytic image-tower GFLOPs per image with the method on ``model``, its extra passes included."""
    return reduced_gflops(model)["vision_gflops"]


# -- shared token operations ---------------------------------------------------------------------------

def token_sizes(state: TokenState) -> torch.Tensor:
    """(B, N, 1) original patches each token stands for (all ones before any merge)."""
    if state.size is not None:
        return state.size
    b, n, _ = state.x.shape
    return state.x.new_ones(b, n, 1)


def rest_weights(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Fuse weights over the tokens *not* in ``keep``: ``scores`` (B, N-1) zeroed at ``keep`` and renormalised
    to sum 1 (ELIP eq. 4)."""
    rest = scores.scatter(1, keep, 0.0)
    return rest / rest.sum(dim=1, keepdim=True).clamp_min(1e-12)


def keep_and_fuse(state: TokenState, keep: torch.Tensor, weights: torch.Tensor | None) -> TokenState:
    """Keep [CLS] and the patch tokens ``keep`` (B, k) (indices into the non-[CLS] tokens, kept in their
    original order); fuse all others into one token appended last, as the ``weights``-weighted sum (B, N-1)
    of their features (EViT eq.; pass renormalised weights for ELIP's eq. 4). ``weights=None`` prunes only."""
    keep = keep.sort(dim=1).values
    b, n, d = state.x.shape
    size = token_sizes(state)
    patches_x, patches_size = state.x[:, 1:], size[:, 1:]
    dropped = torch.ones(b, n - 1, dtype=torch.bool, device=state.x.device).scatter_(1, keep, False)

    def gather(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, keep[..., None].expand(-1, -1, t.shape[-1]))

    parts_x, parts_size = [state.x[:, :1], gather(patches_x)], [size[:, :1], gather(patches_size)]
    parts_source = None
    if state.source is not None:
        parts_source = [state.source[:, :1], gather(state.source[:, 1:])]
    fused = weights is not None and keep.shape[1] < n - 1
    if fused:
        w = (weights * dropped)[..., None].to(state.x.dtype)
        parts_x.append((w * patches_x).sum(dim=1, keepdim=True))
        parts_size.append((patches_size * dropped[..., None]).sum(dim=1, keepdim=True))
        if parts_source is not None:
            parts_source.append((state.source[:, 1:] * dropped[..., None]).sum(dim=1, keepdim=True))
    mask = None
    if state.mask is not None:
        mask = torch.cat([state.mask[:, :1], state.mask[:, 1:].gather(1, keep)] +
                         ([state.mask.new_ones(b, 1)] if fused else []), dim=1)
    return TokenState(x=torch.cat(parts_x, dim=1), size=torch.cat(parts_size, dim=1),
                      source=None if parts_source is None else torch.cat(parts_source, dim=1), mask=mask)
