"""Tiny model configs for the tests (and the DDP helper script): build and run in milliseconds."""

from __future__ import annotations

from vlprune import ModelConfig, TextConfig, VisionConfig
from vlprune.data.toyworld import toy_tokenizer
from vlprune.tokenizer import EOS_ID, PAD_ID

TOY_VOCAB = len(toy_tokenizer())


def tiny_vision(**overrides) -> VisionConfig:
    """32 px images, patch 8 (16 patches + [CLS]), width 32, 2 layers of 4 heads x 8."""
    return VisionConfig(**{"image_size": 32, "patch_size": 8, "width": 32, "num_layers": 2, "head_dim": 8,
                           "num_heads": 4, "intermediate_size": 64, **overrides})


def tiny_clip_config(vision: dict | None = None, text: dict | None = None, **overrides) -> ModelConfig:
    """Dual encoder with a causal text tower pooled at [EOS] (the toy tokenizer's vocabulary)."""
    text_cfg = TextConfig(**{"flavour": "clip", "vocab_size": TOY_VOCAB, "max_length": 40, "width": 32,
                             "num_layers": 2, "head_dim": 8, "num_heads": 4, "intermediate_size": 64,
                             "pad_token_id": PAD_ID, "eot_token_id": EOS_ID, **(text or {})})
    return ModelConfig(**{"kind": "clip", "vision": tiny_vision(**(vision or {})), "text": text_cfg,
                          "embed_dim": 16, "name": "tiny-clip", **overrides})


def tiny_fusion_config(vision: dict | None = None, text: dict | None = None, **overrides) -> ModelConfig:
    """ALBEF-style: 2 BERT text layers, then 1 fusion layer with cross-attention; a 5-answer VQA head."""
    text_cfg = TextConfig(**{"flavour": "bert", "vocab_size": TOY_VOCAB, "max_length": 40, "width": 32,
                             "num_layers": 3, "head_dim": 8, "num_heads": 4, "intermediate_size": 64,
                             "pad_token_id": PAD_ID, "pre_norm": False, "cross_attention_layers": (2,),
                             "encoder_width": 32, **(text or {})})
    return ModelConfig(**{"kind": "fusion", "vision": tiny_vision(**(vision or {})), "text": text_cfg,
                          "embed_dim": 16, "num_answers": 5, "name": "tiny-fusion", **overrides})
