"""vlprune: make vision-language models cheaper to train and run, and measure it honestly."""

from vlprune.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from vlprune.models.convert import ConversionError, from_hf, from_open_clip, to_hf, to_open_clip
from vlprune.models.io import CheckpointError, build_model, create_model, load, load_tokenizer, save
from vlprune.reduce import ELIPConfig, EViTConfig, RandomConfig, ToMeConfig, TRIPSConfig, apply
from vlprune.registry import list_models, register_model

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "ConversionError", "ELIPConfig", "EViTConfig", "ModelConfig",
           "RandomConfig", "TRIPSConfig", "TextConfig", "ToMeConfig", "VisionConfig", "apply", "build_model",
           "create_model", "from_hf", "from_open_clip", "list_models", "load", "load_tokenizer", "register_model",
           "save", "to_hf", "to_open_clip"]
