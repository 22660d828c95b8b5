"""Analytic FLOP counter (docs/token-reduction.md; the convention is stated under docs/results.md's first table).

Counts every matrix multiply: patch embedding, q/k/v/o projections, the two attention matmuls
(QK^T and AV), cross-attention, MLP and the output projection. Norms, softmax, activations and residual
adds are not counted (as ``torch.utils.flop_counter.FlopCounterMode`` does not count them).
GFLOPs = 2 x multiply-accumulates / 1e9, per image (or per text / per pair).

A *token schedule* gives the tokens entering each layer as ``(attention_tokens, mlp_tokens)``; methods
that shrink the sequence between attention and MLP (ToMe, EViT, TRIPS) make the two differ.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlprune.config import ModelConfig, TextConfig, TowerConfig, VisionConfig

Schedule = Sequence[int | tuple[int, int]]


def _pairs(schedule: Schedule, num_layers: int, owner: str) -> list[tuple[int, int]]:
    if len(schedule) != num_layers:
        raise ValueError(f"{owner} token schedule has {len(schedule)} entries for {num_layers} layers")
    return [(s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in schedule]


def attention_macs(queries: int, keys: int, q_dim: int, kv_dim: int, heads: int, head_dim: int) -> int:
    """q, k, v, o projections plus QK^T and AV."""
    inner = heads * head_dim
    projections = queries * q_dim * inner + 2 * keys * kv_dim * inner + queries * inner * q_dim
    return projections + 2 * heads * queries * keys * head_dim


def layer_macs(cfg: TowerConfig, layer: int, attn_tokens: int, mlp_tokens: int, cross_keys: int = 0,
               cross_dim: int = 0, heads: int | None = None, cross_heads: int | None = None) -> int:
    """Multiply-accumulates of one block; ``heads`` / ``cross_heads`` override the computed head counts (heads
    removed per input by SmartTrim)."""
    d, width = cfg.head_dim, cfg.width
    heads = cfg.num_heads[layer] if heads is None else heads
    cross_heads = cfg.num_heads[layer] if cross_heads is None else cross_heads
    macs = attention_macs(attn_tokens, attn_tokens, width, width, heads, d)
    if cross_keys:
        macs += attention_macs(mlp_tokens, cross_keys, width, cross_dim, cross_heads, d)
    return macs + 2 * mlp_tokens * width * cfg.intermediate_size[layer]


def patch_embed_macs(cfg: VisionConfig) -> int:
    return cfg.num_patches * cfg.channels * cfg.patch_size**2 * cfg.width


def vision_macs(cfg: VisionConfig, embed_dim: int, schedule: Schedule | None = None) -> int:
    """Per image: patch embedding, blocks (following ``schedule``), projection of [CLS]."""
    full = cfg.num_patches + 1
    pairs = _pairs(schedule if schedule is not None else [full] * cfg.num_layers, cfg.num_layers, "vision")
    macs = patch_embed_macs(cfg)
    macs += sum(layer_macs(cfg, i, a, m) for i, (a, m) in enumerate(pairs))
    return macs + cfg.width * embed_dim


def text_macs(cfg: TextConfig, embed_dim: int, length: int) -> int:
    """Per text of ``length`` tokens: the unimodal layers (``cfg.unimodal_layers``) and projection."""
    return sum(layer_macs(cfg, i, length, length) for i in range(cfg.unimodal_layers)) + cfg.width * embed_dim


def fusion_macs(cfg: TextConfig, length: int, image_tokens: int) -> int:
    """Per image-text pair: the fusion layers (self-attention over text, cross-attention to image tokens)."""
    return sum(layer_macs(cfg, i, length, length, image_tokens, cfg.encoder_width or 0)
               for i in range(cfg.fusion_start, cfg.num_layers))


def gflops(macs: int) -> float:
    return 2.0 * macs / 1e9


def model_gflops(config: ModelConfig, text_length: int | None = None, schedule: Schedule | None = None,
                 extra_vision_macs: int = 0) -> dict[str, float]:
    """GFLOPs per image (vision, plus a method's extra passes), per text (text) and, for fusion models, per
    pair (fusion)."""
    length = config.text.max_length if text_length is None else text_length
    out = {"vision_gflops": gflops(vision_macs(config.vision, config.embed_dim, schedule) + extra_vision_macs),
           "text_gflops": gflops(text_macs(config.text, config.embed_dim, length))}
    if config.kind == "fusion":
        image_tokens = _pairs(schedule, config.vision.num_layers, "vision")[-1][1] if schedule else \
            config.vision.num_patches + 1
        out["fusion_gflops"] = gflops(fusion_macs(config.text, length, image_tokens))
    return out
