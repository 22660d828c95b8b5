"""Shared tiny fixtures: a CLIP and a fusion config small enough to build and run in milliseconds."""

from __future__ import annotations

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune import ModelConfig
from vlprune.data.toyworld import toy_tokenizer
from vlprune.tokenizer import WordTokenizer


@pytest.fixture
def clip_config() -> ModelConfig:
    return tiny_clip_config()


@pytest.fixture
def fusion_config() -> ModelConfig:
    return tiny_fusion_config()


@pytest.fixture
def tokenizer() -> WordTokenizer:
    return toy_tokenizer()


@pytest.fixture
def clip_model(clip_config):
    torch.manual_seed(0)
    return vlprune.build_model(clip_config).eval()


@pytest.fixture
def fusion_model(fusion_config):
    torch.manual_seed(0)
    return vlprune.build_model(fusion_config).eval()


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
