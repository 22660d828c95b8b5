"""transformers ``BlipForImageTextRetrieval`` <-> vlprune ``FusionModel`` (BLIP layout).

Vision: pre-LN ViT without ``ln_pre``, packed ``qkv``, patch embedding with bias, ``post_layernorm`` on every
token (the image tokens the text attends to). Text: BERT (post-LN, embedding LayerNorm) in which every layer has
cross-attention; the unimodal pass (ITC) runs all layers without it, the multimodal pass (ITM) runs them all
again from the embeddings with it (``TextConfig.fusion_from_embeddings``). Projections have biases.

Not in the checkpoint, so freshly initialised and dropped on export: the temperature (``logit_scale``, from
``logit_scale_init_value``; transformers' retrieval model returns plain cosine similarities) and the MLM head.
"""

from __future__ import annotations

import torch

from vlprune.config import ModelConfig, TextConfig, VisionConfig
from vlprune.models.convert.hf_clip import pad_id, tower_fields, tower_kwargs
from vlprune.models.convert.mapping import ConversionError, Entry, fill_fresh, linear, packed_qkv, to_ours, to_theirs
from vlprune.models.convert.padding import padded_state
from vlprune.models.convert.preprocess import hf_preprocess
from vlprune.models.io import Model, build_model, load_state_strict

FRESH = ("logit_scale", "mlm_head.")
IGNORED = ("position_ids",)


def config_from_hf(cfg, preprocessor: dict | None) -> ModelConfig:
    v, t = cfg.vision_config, cfg.text_config
    vision = VisionConfig(image_size=v.image_size, patch_size=v.patch_size, channels=getattr(v, "num_channels", 3),
                          ln_pre=False, patch_bias=True, **tower_fields(v, "vision_config"),
                          **hf_preprocess(preprocessor, v.image_size, "squash"))
    layers = t.num_hidden_layers
    text = TextConfig(flavour="bert", vocab_size=t.vocab_size, max_length=t.max_position_embeddings,
                      pad_token_id=pad_id(t.pad_token_id, t.vocab_size), pre_norm=False,
                      cross_attention_layers=tuple(range(layers)), encoder_width=t.encoder_hidden_size,
                      fusion_from_embeddings=True, **tower_fields(t, "text_config"))
    return ModelConfig(kind="fusion", vision=vision, text=text, embed_dim=cfg.image_text_hidden_size,
                       init_logit_scale=float(cfg.logit_scale_init_value), proj_bias=True, name="hf-blip")


def _vision_blocks(layers: int) -> list[Entry]:
    out = []
    for i in range(layers):
        t, o = f"vision_model.encoder.layers.{i}", f"visual.blocks.{i}"
        out += packed_qkv(f"{t}.self_attn.qkv.weight", f"{t}.self_attn.qkv.bias", f"{o}.attn")
        for a, b in (("self_attn.projection", "attn.o"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out += linear(f"{t}.{a}", f"{o}.{b}")
    return out


def _attention(theirs: str, ours: str, norm: str) -> list[Entry]:
    """A BERT attention sub-layer: ``self.query/key/value``, ``output.dense`` and its post-LN ``LayerNorm``."""
    return [*linear(f"{theirs}.self.query", f"{ours}.q"), *linear(f"{theirs}.self.key", f"{ours}.k"),
            *linear(f"{theirs}.self.value", f"{ours}.v"), *linear(f"{theirs}.output.dense", f"{ours}.o"),
            *linear(f"{theirs}.output.LayerNorm", norm)]


def _text_blocks(layers: int) -> list[Entry]:
    out = []
    for i in range(layers):
        t, o = f"text_encoder.encoder.layer.{i}", f"text.blocks.{i}"
        out += [*_attention(f"{t}.attention", f"{o}.attn", f"{o}.norm1"),
                *_attention(f"{t}.crossattention", f"{o}.cross_attn", f"{o}.norm_cross"),
                *linear(f"{t}.intermediate.dense", f"{o}.mlp.fc1"), *linear(f"{t}.output.dense", f"{o}.mlp.fc2"),
                *linear(f"{t}.output.LayerNorm", f"{o}.norm2")]
    return out


def entries(config: ModelConfig) -> list[Entry]:
    v, t = "vision_model", "text_encoder"
    return [Entry(f"{v}.embeddings.class_embedding", ("visual.cls_token",)),
            *linear(f"{v}.embeddings.patch_embedding", "visual.patch_embed"),
            Entry(f"{v}.embeddings.position_embedding", ("visual.pos_embed",)),
            *_vision_blocks(config.vision.num_layers),
            *linear(f"{v}.post_layernorm", "visual.norm"),
            Entry(f"{t}.embeddings.word_embeddings.weight", ("text.token_embed.weight",)),
            Entry(f"{t}.embeddings.position_embeddings.weight", ("text.pos_embed",), lead=1),
            *linear(f"{t}.embeddings.LayerNorm", "text.embed_norm"),
            *_text_blocks(config.text.num_layers),
            *linear("vision_proj", "visual_proj"), *linear("text_proj", "text_proj"), *linear("itm_head", "itm_head")]


def from_checkpoint(checkpoint) -> Model:
    config = config_from_hf(checkpoint.config, checkpoint.preprocessor)
    model = build_model(config)
    state = to_ours(entries(config), checkpoint.state, checkpoint.source, IGNORED)
    load_state_strict(model, fill_fresh(model, state, FRESH), checkpoint.source)
    return model.eval()


def hf_config(config: ModelConfig):
    from transformers import BlipConfig

    v, t = config.vision, config.text
    blip = t.fusion_from_embeddings and config.proj_bias and v.patch_bias and not v.ln_pre and v.pool == "cls"
    if not (blip and config.num_answers == 0):
        raise ConversionError(f"{config.name or 'this model'} does not have BLIP's retrieval layout (fusion from the "
                              "embeddings in every text layer, projections with bias, [CLS] pooling, no VQA head); "
                              "keep it in vlprune's format (vlprune.save)")
    text = {**tower_kwargs(t), "vocab_size": t.vocab_size, "max_position_embeddings": t.max_length,
            "pad_token_id": t.pad_token_id, "encoder_hidden_size": v.width}
    vision = {**tower_kwargs(v), "image_size": v.image_size, "patch_size": v.patch_size}
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=config.embed_dim,
                      logit_scale_init_value=config.init_logit_scale)


def to_transformers(model: Model) -> torch.nn.Module:
    """A transformers ``BlipForImageTextRetrieval`` with ``model``'s weights (zero-padded when pruned)."""
    from transformers import BlipForImageTextRetrieval

    if model.config.kind != "fusion":
        raise ConversionError(f"only kind='fusion' models export to BlipForImageTextRetrieval, got "
                              f"kind={model.config.kind!r}")
    stock, state = padded_state(model)
    hf_model = BlipForImageTextRetrieval(hf_config(stock))
    hf_model.load_state_dict(to_theirs(entries(stock), state), strict=True)
    return hf_model.eval()
