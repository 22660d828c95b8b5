"""Named architectures (like timm's ``register_model``): name -> ``ModelConfig`` builder.

Bundled weights live in ``vlprune/assets/<name>/``; an architecture without bundled weights can still be
built with random weights by ``vlprune.create_model(name)`` (speed does not need trained weights).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlprune.config import ModelConfig, TextConfig, VisionConfig
from vlprune.data.toyworld import ANSWERS, toy_tokenizer
from vlprune.tokenizer import EOS_ID, PAD_ID

ASSETS = Path(__file__).parent / "assets"
_ARCHITECTURES: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a config builder under its function name with ``_`` read as ``-``."""
    _ARCHITECTURES[fn.__name__.replace("_", "-")] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_ARCHITECTURES)


def model_config(name: str) -> ModelConfig:
    if name not in _ARCHITECTURES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())} (or pass a directory "
                       "holding config.json + model.safetensors)")
    return _ARCHITECTURES[name]()


def bundled_dir(name: str, assets: Path = ASSETS) -> Path | None:
    """``assets/name`` when it holds a checkpoint (the package's bundled models by default)."""
    path = assets / name
    return path if (path / "model.safetensors").is_file() else None


def _toy_vision() -> VisionConfig:
    """Sin-cos position init: with the default std-0.02 init, ITC never grew the position signal and the trained
    towers could not tell where a patch was (docs/training.md, "Position")."""
    return VisionConfig(image_size=64, patch_size=8, width=128, num_layers=12, head_dim=32, num_heads=4,
                        intermediate_size=512, pos_embed_init="sincos")


@register_model
def toy_clip() -> ModelConfig:
    """12-layer width-128 ViT (64 patches) + 4-layer causal text encoder, trained on the toy world."""
    vocab = len(toy_tokenizer())
    text = TextConfig(flavour="clip", vocab_size=vocab, max_length=40, width=128, num_layers=4, head_dim=32,
                      num_heads=4, intermediate_size=512, pad_token_id=PAD_ID, eot_token_id=EOS_ID)
    return ModelConfig(kind="clip", vision=_toy_vision(), text=text, embed_dim=128, name="toy-clip")


@register_model
def toy_fusion() -> ModelConfig:
    """Same ViT + BERT-style text encoder: 4 text layers, then 2 fusion layers with cross-attention."""
    vocab = len(toy_tokenizer())
    text = TextConfig(flavour="bert", vocab_size=vocab, max_length=40, width=128, num_layers=6, head_dim=32,
                      num_heads=4, intermediate_size=512, pad_token_id=PAD_ID, pre_norm=False,
                      layer_norm_eps=1e-12, cross_attention_layers=(4, 5), encoder_width=128)
    return ModelConfig(kind="fusion", vision=_toy_vision(), text=text, embed_dim=128,
                       num_answers=len(ANSWERS), name="toy-fusion")


@register_model
def vit_b16_clip() -> ModelConfig:
    """CLIP ViT-B/16 shapes (224 px, 196 patches + [CLS], width 768, 12 layers); for speed measurements."""
    vision = VisionConfig(image_size=224, patch_size=16, width=768, num_layers=12, head_dim=64, num_heads=12,
                          intermediate_size=3072, ln_pre=True, patch_bias=False, act="quick_gelu")
    text = TextConfig(flavour="clip", vocab_size=49408, max_length=77, width=512, num_layers=12, head_dim=64,
                      num_heads=8, intermediate_size=2048, act="quick_gelu", pad_token_id=0)
    return ModelConfig(kind="clip", vision=vision, text=text, embed_dim=512, name="vit-b16-clip")
