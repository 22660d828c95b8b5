"""transformers ``CLIPModel`` <-> vlprune ``CLIP``: config and state-dict maps.

Pre-LN ViT with ``pre_layrnorm`` and a bias-free patch embedding, causal text tower pooled at the first
end-of-text token (at the highest token id for old configs with ``eos_token_id == 2``), bias-free projections.
"""

from __future__ import annotations

from typing import Any

import torch

from vlprune.config import ModelConfig, TextConfig, VisionConfig
from vlprune.models.convert.mapping import ConversionError, Entry, linear, rename, to_ours, to_theirs
from vlprune.models.convert.padding import padded_state
from vlprune.models.convert.preprocess import hf_preprocess
from vlprune.models.io import Model, build_model, load_state_strict

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu"}
HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
IGNORED = ("position_ids",)  # a buffer older transformers versions saved
LEGACY_EOS_ID = 2  # CLIPTextConfig.eos_token_id before transformers PR #24773: pooled at the highest token id


def activation(name: str, owner: str) -> str:
    if name not in ACTIVATIONS:
        raise ConversionError(f"{owner}.hidden_act={name!r} is not supported; vlprune has {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def pad_id(value: int | None, vocab_size: int) -> int:
    """The padding id, or 0 where a config has none inside the vocabulary (padding is masked either way)."""
    return value if value is not None and 0 <= value < vocab_size else 0


def _heads(cfg: Any) -> tuple[int, int]:
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConversionError(f"hidden_size {cfg.hidden_size} is not a multiple of {cfg.num_attention_heads} heads")
    return cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads


def tower_fields(cfg: Any, owner: str) -> dict:
    heads, head_dim = _heads(cfg)
    return {"width": cfg.hidden_size, "num_layers": cfg.num_hidden_layers, "head_dim": head_dim, "num_heads": heads,
            "intermediate_size": cfg.intermediate_size, "act": activation(cfg.hidden_act, owner),
            "layer_norm_eps": float(cfg.layer_norm_eps)}


def config_from_hf(cfg: Any, preprocessor: dict | None) -> ModelConfig:
    v, t = cfg.vision_config, cfg.text_config
    vision = VisionConfig(image_size=v.image_size, patch_size=v.patch_size, channels=v.num_channels, ln_pre=True,
                          patch_bias=False, **tower_fields(v, "vision_config"),
                          **hf_preprocess(preprocessor, v.image_size, "shortest"))
    legacy = t.eos_token_id == LEGACY_EOS_ID
    text = TextConfig(flavour="clip", vocab_size=t.vocab_size, max_length=t.max_position_embeddings,
                      pad_token_id=pad_id(t.pad_token_id, t.vocab_size),
                      eot_token_id=None if legacy else t.eos_token_id, pool="argmax" if legacy else "eot",
                      **tower_fields(t, "text_config"))
    return ModelConfig(kind="clip", vision=vision, text=text, embed_dim=cfg.projection_dim,
                       init_logit_scale=float(cfg.logit_scale_init_value), name="hf-clip")


def block_entries(theirs: str, ours: str, layers: int) -> list[Entry]:
    """The pre-LN encoder layers CLIP (and BLIP's vision tower, attention aside) use."""
    names = [("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"), ("self_attn.v_proj", "attn.v"),
             ("self_attn.out_proj", "attn.o"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
    return [e for i in range(layers) for a, b in names
            for e in linear(f"{theirs}.encoder.layers.{i}.{a}", f"{ours}.blocks.{i}.{b}")]


def entries(config: ModelConfig) -> list[Entry]:
    v, t = "vision_model", "text_model"
    return [rename(f"{v}.embeddings.class_embedding", "visual.cls_token", lead=2),
            rename(f"{v}.embeddings.patch_embedding.weight", "visual.patch_embed.weight"),
            rename(f"{v}.embeddings.position_embedding.weight", "visual.pos_embed", lead=1),
            *linear(f"{v}.pre_layrnorm", "visual.norm_pre"),
            *block_entries(v, "visual", config.vision.num_layers),
            *linear(f"{v}.post_layernorm", "visual.norm"),
            rename(f"{t}.embeddings.token_embedding.weight", "text.token_embed.weight"),
            rename(f"{t}.embeddings.position_embedding.weight", "text.pos_embed", lead=1),
            *block_entries(t, "text", config.text.num_layers),
            *linear(f"{t}.final_layer_norm", "text.norm"),
            rename("visual_projection.weight", "visual_proj.weight"),
            rename("text_projection.weight", "text_proj.weight"),
            rename("logit_scale", "logit_scale")]


def from_checkpoint(checkpoint) -> Model:
    config = config_from_hf(checkpoint.config, checkpoint.preprocessor)
    model = build_model(config)
    load_state_strict(model, to_ours(entries(config), checkpoint.state, checkpoint.source, IGNORED),
                      checkpoint.source)
    return model.eval()


def tower_kwargs(cfg: VisionConfig | TextConfig) -> dict:
    """transformers config fields of a uniform (stock) tower."""
    return {"hidden_size": cfg.width, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads[0],
            "intermediate_size": cfg.intermediate_size[0], "hidden_act": HF_ACTIVATIONS[cfg.act],
            "layer_norm_eps": cfg.layer_norm_eps}


def hf_config(config: ModelConfig):
    from transformers import CLIPConfig

    v, t = config.vision, config.text
    if not (v.ln_pre and not v.patch_bias and v.qkv_bias and v.pre_norm and t.pre_norm and t.qkv_bias
            and t.flavour == "clip" and v.pool == "cls"):
        raise ConversionError(f"{config.name or 'this model'} does not have CLIP's layout (pre-LN ViT with ln_pre, "
                              "bias-free patch embedding, [CLS] pooling, causal text tower); keep it in vlprune's "
                              "format")
    if t.pool == "eot" and t.eot_token_id == LEGACY_EOS_ID:
        raise ConversionError(f"{config.name or 'this model'} pools at end-of-text id {LEGACY_EOS_ID}, which "
                              "transformers reads as its legacy highest-id pooling; keep it in vlprune's format")
    eos = LEGACY_EOS_ID if t.pool == "argmax" or t.eot_token_id is None else t.eot_token_id
    text = {**tower_kwargs(t), "vocab_size": t.vocab_size, "max_position_embeddings": t.max_length,
            "eos_token_id": eos, "pad_token_id": t.pad_token_id}
    vision = {**tower_kwargs(v), "image_size": v.image_size, "patch_size": v.patch_size, "num_channels": v.channels}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.embed_dim,
                      logit_scale_init_value=config.init_logit_scale)


def to_transformers(model: Model) -> torch.nn.Module:
    """A transformers ``CLIPModel`` with ``model``'s weights (zero-padded when structurally pruned)."""
    from transformers import CLIPModel

    if model.config.kind != "clip":
        raise ConversionError(f"only kind='clip' models export to CLIPModel, got kind={model.config.kind!r}")
    stock, state = padded_state(model)
    hf_model = CLIPModel(hf_config(stock))
    hf_model.load_state_dict(to_theirs(entries(stock), state), strict=True)
    return hf_model.eval()
