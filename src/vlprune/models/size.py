"""Parameter count of a model config by arithmetic alone, so absurd sizes are refused before any allocation.

``estimate_params(config)`` equals ``build_model(config).num_params()`` exactly. Every sub-layer's count is
linear in its head count and hidden width, so per-layer lists enter only through their sums: a 100k-layer config
is counted in milliseconds.
"""

from __future__ import annotations

from vlprune.config import ModelConfig, TextConfig, TowerConfig, VisionConfig


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _norm(width: int) -> int:
    return 2 * width


def _attention(cfg: TowerConfig, heads: int, kv_dim: int) -> int:
    """q, k, v (``qkv_bias``) and the output projection (always biased) of ``heads`` heads summed over layers;
    the output bias counts once per layer through ``_blocks``."""
    inner = heads * cfg.head_dim
    return (_linear(cfg.width, inner, cfg.qkv_bias) + 2 * _linear(kv_dim, inner, cfg.qkv_bias)
            + inner * cfg.width)


def _blocks(cfg: TowerConfig, cross_layers: tuple[int, ...] = (), cross_dim: int = 0) -> int:
    """All transformer blocks of a tower: two LayerNorms, self-attention and MLP each; fusion layers add a
    LayerNorm and a cross-attention over ``cross_dim``-wide image tokens."""
    width, layers = cfg.width, cfg.num_layers
    per_layer = 2 * _norm(width) + width + width  # norms, attention output bias, fc2 bias
    hidden = sum(cfg.intermediate_size)
    total = layers * per_layer + _attention(cfg, sum(cfg.num_heads), width) + hidden * (2 * width + 1)
    cross_heads = sum(cfg.num_heads[i] for i in cross_layers)
    return total + len(cross_layers) * (_norm(width) + width) + _attention(cfg, cross_heads, cross_dim)


def _vision(cfg: VisionConfig) -> int:
    w = cfg.width
    patch = cfg.channels * w * cfg.patch_size**2 + (w if cfg.patch_bias else 0)
    return patch + w + (cfg.num_patches + 1) * w + (_norm(w) if cfg.ln_pre else 0) + _blocks(cfg) + _norm(w)


def _text(cfg: TextConfig) -> int:
    w = cfg.width  # one LayerNorm outside the blocks: the embedding one (bert) or the final one (clip)
    return (cfg.vocab_size * w + cfg.max_length * w + _norm(w)
            + _blocks(cfg, cfg.cross_attention_layers, cfg.encoder_width or 0))


def _fusion_heads(config: ModelConfig) -> int:
    """ITM, MLM and (with ``num_answers``) VQA heads of a fusion model."""
    w, answers = config.text.width, config.num_answers
    mlm = _linear(w, w) + _norm(w) + _linear(w, config.text.vocab_size)
    vqa = _linear(w, 2 * w) + _linear(2 * w, answers) if answers > 0 else 0
    return _linear(w, 2) + mlm + vqa


def estimate_params(config: ModelConfig) -> int:
    """Parameters ``build_model(config)`` will have (no tensor is created)."""
    projections = (_linear(config.vision.width, config.embed_dim, config.proj_bias)
                   + _linear(config.text.width, config.embed_dim, config.proj_bias) + 1)  # + logit scale
    heads = _fusion_heads(config) if config.kind == "fusion" else 0
    return _vision(config.vision) + _text(config.text) + projections + heads
