"""Tiny random reference models built with the real libraries (transformers, open_clip), their tokenizers, sample
inputs, and the token-reduction configs that keep every token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlprune.method_registry import list_methods, method_config

transformers = pytest.importorskip("transformers", reason="transformers is not installed; `make test` installs it")

CAPTIONS = ["a photo of the cat", "the dog", "two cats on a mat", "a dog at the sea"]
WORDS = sorted({w for c in CAPTIONS for w in c.split()})
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "image_size": 32, "patch_size": 8}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 40}
TOL = 1e-4


def keep_all_configs() -> dict:
    """Every registered token-reduction method at keep ratio 1.0, for a 2-layer vision tower."""
    settings = {"evit": {"layers": (0, 1), "keep_ratio": 1.0}, "random": {"layers": (0, 1), "keep_ratio": 1.0},
                "tome": {"r": 0}, "elip": {"stages": (1, 1), "keep": (1.0,)},
                "trips": {"layers": (0, 1), "keep_ratio": 1.0}}
    assert set(settings) == set(list_methods()), "a new token method needs its keep-everything setting here"
    return {name: method_config(name, **values) for name, values in settings.items()}


def images() -> list[Image.Image]:
    """Odd sizes (odd crop excess included), portrait and landscape, RGB and greyscale."""
    rng = np.random.default_rng(0)
    shapes = [(45, 37, 3), (50, 64, 3), (32, 32, 3), (41, 70, 3)]
    out = [Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8)) for s in shapes]
    return out + [Image.fromarray(rng.integers(0, 256, (39, 52), dtype=np.uint8), mode="L")]


def clip_tokenizer():
    """A CLIP BPE tokenizer over the caption words (each word one token; end-of-text has the highest id)."""
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    merges = []
    for word in WORDS:
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            tail = char + ("</w>" if i == len(word) - 1 else "")
            merges.append((piece, tail))
            piece += tail
            vocab.setdefault(piece, len(vocab))
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def bert_tokenizer():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s"])}
    return transformers.BertTokenizer(vocab=vocab)


def hf_clip(seed: int = 0):
    tokenizer = clip_tokenizer()
    text = {**TEXT, "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)
    return transformers.CLIPModel(config).eval(), tokenizer


def hf_blip(seed: int = 0):
    tokenizer = bert_tokenizer()
    torch.manual_seed(seed)
    config = transformers.BlipConfig(text_config={**TEXT, "vocab_size": len(tokenizer)}, vision_config=VISION,
                                     image_text_hidden_size=16)
    return transformers.BlipForImageTextRetrieval(config).eval(), tokenizer


def save_hf(model, tokenizer, processor, directory: Path) -> Path:
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


def clip_processor():
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                              image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])


def blip_processor():
    return transformers.BlipImageProcessorPil(size={"height": 32, "width": 32})


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())
