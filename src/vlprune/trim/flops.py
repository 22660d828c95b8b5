"""Per-instance analytic FLOPs (GFLOPs = 2 x multiply-accumulates, attention matmuls included) of one image-text
pair: image tower, text encoder and fusion layers, following the tokens and heads each input kept. Text is
counted at its real length (no padding) for every method, so the untrimmed model is compared fairly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlprune.config import ModelConfig
from vlprune.models.flops import gflops, layer_macs, patch_embed_macs
from vlprune.trim.model import SmartTrim, TrimRecord


def _vision_macs(config: ModelConfig, vision_tokens: Sequence[tuple[int, int]], heads: dict[str, int]) -> int:
    """Patch embedding and vision blocks at ``vision_tokens`` per layer, ``heads`` as in ``pair_macs``."""
    vision = config.vision
    return patch_embed_macs(vision) + sum(layer_macs(vision, i, attn, mlp, heads=heads.get(f"vision.{i}"))
                                          for i, (attn, mlp) in enumerate(vision_tokens))


def pair_macs(config: ModelConfig, vision_tokens: Sequence[tuple[int, int]], text_tokens: Sequence[int],
              heads: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of one pair: ``vision_tokens`` (attention, MLP) tokens per vision layer, ``text_tokens``
    per text layer (the fusion layers' cross-attention sees the image tokens leaving the last vision layer);
    ``heads`` maps an attention module key (``vision.3``, ``text.4.cross``) to the heads it computed."""
    text, heads = config.text, heads or {}
    macs = _vision_macs(config, vision_tokens, heads)
    image_tokens = vision_tokens[-1][1]
    for i, n in enumerate(text_tokens):
        fusion = i >= text.fusion_start
        macs += layer_macs(text, i, n, n, image_tokens if fusion else 0, (text.encoder_width or 0) if fusion else 0,
                           heads=heads.get(f"text.{i}"), cross_heads=heads.get(f"text.{i}.cross"))
    return macs


def record_gflops(trim: SmartTrim, record: TrimRecord, vision_only: bool = False) -> np.ndarray:
    """(B,) GFLOPs per pair of a forward's record, the trimmers' own cost included. ``vision_only``: per image of
    the image tower alone (patch embedding, blocks, [CLS] projection, as ``model_gflops``'s ``vision_gflops``;
    the vision trimmers' cost included)."""
    config = trim.model.config
    counts = {name: record.counts(name).round().long().tolist() for name in record.keep}
    overhead = trim.trimmer_macs(record, "vision" if vision_only else None).tolist()
    out = []
    for b, extra in enumerate(overhead):
        vision = [(counts[f"tokens:vision.{i}"][b],) * 2 for i in range(config.vision.num_layers)]
        heads = {name.split(":")[1]: values[b] for name, values in counts.items() if name.startswith("heads:")}
        if vision_only:
            macs = _vision_macs(config, vision, heads) + config.vision.width * config.embed_dim
        else:
            macs = pair_macs(config, vision, [counts[f"tokens:text.{i}"][b] for i in range(config.text.num_layers)],
                             heads)
        out.append(gflops(macs + int(extra)))
    return np.array(out)


def static_gflops(config: ModelConfig, schedule: Sequence[tuple[int, int]], text_lengths: torch.Tensor) -> np.ndarray:
    """(B,) GFLOPs per pair of a model with a static vision token schedule (base: every token), all heads, and
    text of the given real lengths."""
    per_length = {n: gflops(pair_macs(config, schedule, [n] * config.text.num_layers))
                  for n in set(text_lengths.tolist())}
    return np.array([per_length[n] for n in text_lengths.tolist()])


def distribution(values: np.ndarray, bins: int = 20) -> dict:
    """Mean, p10/p50/p90 and a histogram (counts, edges) of per-instance values."""
    counts, edges = np.histogram(values, bins=bins)
    return {"mean": float(values.mean()), "p10": float(np.percentile(values, 10)),
            "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}
