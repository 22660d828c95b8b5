"""vlprune: make vision-language models cheaper to train and run, and measure it honestly."""

# the other method packages register their configs in vlprune.method_registry when imported
import vlprune.reduce.text_tokens  # noqa: E402,F401,I001
import vlprune.structured.config  # noqa: E402,F401
import vlprune.trim.config  # noqa: E402,F401
from vlprune.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from vlprune.method_registry import describe_methods, list_methods, method_config
from vlprune.models.convert import ConversionError, from_hf, from_open_clip, to_hf, to_open_clip
from vlprune.models.io import CheckpointError, build_model, create_model, load, load_tokenizer, save
from vlprune.reduce import ELIPConfig, EViTConfig, RandomConfig, ToMeConfig, TRIPSConfig, apply
from vlprune.registry import list_models, register_model

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "ConversionError", "ELIPConfig", "EViTConfig", "ModelConfig",
           "RandomConfig", "TRIPSConfig", "TextConfig", "ToMeConfig", "VisionConfig", "apply", "build_model",
           "create_model", "describe_methods", "from_hf", "from_open_clip", "list_methods", "list_models", "load",
           "load_tokenizer", "method_config", "register_model", "save", "to_hf", "to_open_clip"]
