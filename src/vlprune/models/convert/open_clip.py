"""open_clip ``CLIP`` (ViT image tower, built-in text transformer) <-> vlprune ``CLIP``.

Sources: an in-memory open_clip model; a directory in open_clip's ``local-dir:`` / hub layout
(``open_clip_config.json`` with ``model_cfg`` and ``preprocess_cfg``, plus ``open_clip_model.safetensors``);
or a model name from open_clip's registry with a ``.safetensors`` weights file. Packed attention
(``in_proj_weight``) is split into q/k/v; ``proj`` / ``text_projection`` are (in, out) matrices.

Text pooling: open_clip's ``argmax`` pools at the highest token id, which its tokenizer makes the end-of-text
token (``vocab_size - 1``); vlprune pools at that id's first occurrence, the same position for tokenizer output.
Options vlprune has no equivalent for (layer scale, attentional pooling, timm or HF towers, custom attention,
SigLIP's logit bias, ...) raise ``ConversionError`` naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlprune.config import ModelConfig, TextConfig, VisionConfig, read_json_object
from vlprune.models.convert.mapping import ConversionError, Entry, linear, packed_qkv, rename, to_ours, to_theirs
from vlprune.models.convert.padding import padded_state
from vlprune.models.convert.preprocess import open_clip_preprocess
from vlprune.models.io import Model, build_model, load_state_strict

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors")
EPS = 1e-5
# options with the value vlprune supports (anything else in a config is refused by name)
_VISION_OK = {"ls_init_value": None, "attentional_pool": False, "pos_embed_type": "learnable",
              "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
              "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
              "act_kwargs": None, "norm_kwargs": None}
_VISION_POOLS = {"tok": "cls", "avg": "mean"}  # open_clip vision pool_type -> VisionConfig.pool
_TEXT_OK = {"hf_model_name": None, "embed_cls": False, "no_causal_mask": False, "proj_bias": False,
            "proj_type": "linear", "ls_init_value": None, "block_type": None, "qk_norm": False,
            "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
            "scale_fc": False, "act_kwargs": None, "norm_kwargs": None, "final_ln_after_pool": False}
_MODEL_OK = {"custom_text": False, "init_logit_bias": None}


def _refuse_unsupported(model_cfg: dict) -> None:
    bad = {k: model_cfg[k] for k, ok in _MODEL_OK.items() if model_cfg.get(k, ok) != ok}
    for part, allowed in (("vision_cfg", _VISION_OK), ("text_cfg", _TEXT_OK)):
        cfg = model_cfg.get(part, {})
        bad.update({f"{part}.{k}": cfg[k] for k, ok in allowed.items() if cfg.get(k, ok) not in (ok, "default")})
    pool = model_cfg.get("text_cfg", {}).get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        bad["text_cfg.pool_type"] = pool
    vision = model_cfg.get("vision_cfg", {})
    if vision.get("pool_type", "tok") not in _VISION_POOLS:
        bad["vision_cfg.pool_type"] = vision["pool_type"]
    elif vision.get("pool_type") == "avg" and vision.get("final_ln_after_pool", False):
        bad["vision_cfg.final_ln_after_pool"] = True  # LayerNorm of the mean != mean of the LayerNorms
    if not isinstance(vision.get("layers", 12), int):
        bad["vision_cfg.layers"] = vision["layers"]  # a tuple means a ModifiedResNet
    if bad:
        raise ConversionError(f"open_clip options {bad} are not supported; vlprune converts ViT CLIP models with the "
                              "built-in text transformer")


def _square(size) -> int:
    if isinstance(size, int):
        return size
    if len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    raise ConversionError(f"open_clip image_size {size} is not square; vlprune's ViT takes square images")


def config_from_open_clip(model_cfg: dict, preprocess_cfg: dict | None = None, name: str = "open-clip"
                          ) -> ModelConfig:
    """vlprune config of an open_clip ``model_cfg`` (the JSON of open_clip's model registry)."""
    _refuse_unsupported(model_cfg)
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    width, head_width = v.get("width", 768), v.get("head_width", 64)
    image_size = _square(v.get("image_size", 224))
    vision = VisionConfig(image_size=image_size, patch_size=v.get("patch_size", 16), width=width,
                          num_layers=v.get("layers", 12), head_dim=head_width, num_heads=width // head_width,
                          intermediate_size=int(width * v.get("mlp_ratio", 4.0)), ln_pre=not v.get("no_ln_pre", False),
                          patch_bias=False, act=act, layer_norm_eps=EPS, pool=_VISION_POOLS[v.get("pool_type", "tok")],
                          **open_clip_preprocess(preprocess_cfg or {}, image_size))
    t_width, heads, vocab = t.get("width", 512), t.get("heads", 8), t.get("vocab_size", 49408)
    pool = "eot" if t.get("pool_type", "argmax") == "eos" else "argmax"
    eot = t.get("eos_id", 2) if pool == "eot" else vocab - 1
    text = TextConfig(flavour="clip", vocab_size=vocab, max_length=t.get("context_length", 77), width=t_width,
                      num_layers=t.get("layers", 12), head_dim=t_width // heads, num_heads=heads,
                      intermediate_size=int(t_width * t.get("mlp_ratio", 4.0)), act=act, layer_norm_eps=EPS,
                      pad_token_id=t.get("pad_id", 0), eot_token_id=eot, pool=pool)
    return ModelConfig(kind="clip", vision=vision, text=text, embed_dim=model_cfg["embed_dim"], name=name)


def _blocks(theirs: str, ours: str, layers: int) -> list[Entry]:
    out = []
    for i in range(layers):
        t, o = f"{theirs}.resblocks.{i}", f"{ours}.blocks.{i}"
        out += [*packed_qkv(f"{t}.attn.in_proj_weight", f"{t}.attn.in_proj_bias", f"{o}.attn"),
                *linear(f"{t}.attn.out_proj", f"{o}.attn.o"), *linear(f"{t}.ln_1", f"{o}.norm1"),
                *linear(f"{t}.ln_2", f"{o}.norm2"), *linear(f"{t}.mlp.c_fc", f"{o}.mlp.fc1"),
                *linear(f"{t}.mlp.c_proj", f"{o}.mlp.fc2")]
    return out


def entries(config: ModelConfig) -> list[Entry]:
    return [rename("visual.class_embedding", "visual.cls_token", lead=2),
            rename("visual.conv1.weight", "visual.patch_embed.weight"),
            rename("visual.positional_embedding", "visual.pos_embed", lead=1),
            *(linear("visual.ln_pre", "visual.norm_pre") if config.vision.ln_pre else []),
            *_blocks("visual.transformer", "visual", config.vision.num_layers),
            *linear("visual.ln_post", "visual.norm"),
            rename("visual.proj", "visual_proj.weight", transpose=True),
            rename("token_embedding.weight", "text.token_embed.weight"),
            rename("positional_embedding", "text.pos_embed", lead=1),
            *_blocks("transformer", "text", config.text.num_layers),
            *linear("ln_final", "text.norm"),
            rename("text_projection", "text_proj.weight", transpose=True),
            rename("logit_scale", "logit_scale")]


def _instance_cfg(model: torch.nn.Module) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of an in-memory open_clip model, read from its modules."""
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "conv1") or not hasattr(model, "token_embedding"):
        raise ConversionError(f"{type(model).__name__} is not an open_clip CLIP with a ViT image tower and the "
                              "built-in text transformer")
    v_block, t_block = visual.transformer.resblocks[0], model.transformer.resblocks[0]
    act = type(v_block.mlp.gelu).__name__
    if act not in ("QuickGELU", "GELU") or getattr(v_block.mlp.gelu, "approximate", "none") != "none":
        raise ConversionError(f"open_clip activation {v_block.mlp.gelu} is not supported (QuickGELU or GELU)")
    width = visual.conv1.out_channels
    t_width = model.token_embedding.embedding_dim
    vision_cfg = {"image_size": visual.image_size, "patch_size": visual.conv1.kernel_size[0], "width": width,
                  "layers": len(visual.transformer.resblocks), "head_width": width // v_block.attn.num_heads,
                  "mlp_ratio": v_block.mlp.c_fc.out_features / width,
                  "no_ln_pre": isinstance(visual.ln_pre, torch.nn.Identity), "pool_type": visual.pool_type,
                  "final_ln_after_pool": visual.final_ln_after_pool}
    text_cfg = {"context_length": model.positional_embedding.shape[0],
                "vocab_size": model.token_embedding.num_embeddings, "width": t_width,
                "heads": t_block.attn.num_heads, "layers": len(model.transformer.resblocks),
                "mlp_ratio": t_block.mlp.c_fc.out_features / t_width, "pool_type": model.text_pool_type,
                "eos_id": getattr(model, "text_eos_id", None)}
    model_cfg = {"embed_dim": visual.output_dim, "quick_gelu": act == "QuickGELU", "vision_cfg": vision_cfg,
                 "text_cfg": text_cfg, "init_logit_bias": None if getattr(model, "logit_bias", None) is None else 0}
    return model_cfg, dict(getattr(visual, "preprocess_cfg", {}) or {})


def _read_dir(directory: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ConversionError(f"{directory}: no {CONFIG_FILE}; expected open_clip's local-dir layout "
                              f"({CONFIG_FILE} + {WEIGHT_FILES[0]})")
    data = read_json_object(config_path, "open_clip config", ConversionError)
    if not isinstance(data.get("model_cfg"), dict):
        raise ConversionError(f"{config_path} has no 'model_cfg' object")
    if not isinstance(data.get("preprocess_cfg", {}), dict):
        raise ConversionError(f"{config_path}: 'preprocess_cfg' must be a JSON object")
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        raise ConversionError(f"{directory}: none of {list(WEIGHT_FILES)}; vlprune reads safetensors only (re-save a "
                              ".bin/.pt checkpoint with safetensors.torch.save_file(model.state_dict(), ...))")
    return data["model_cfg"], data.get("preprocess_cfg", {}), load_file(str(weights))


def from_open_clip(source: torch.nn.Module | str | Path, weights: str | Path | None = None) -> Model:
    """A vlprune ``CLIP`` from an open_clip model, an open_clip ``local-dir`` directory, or a registry model
    name plus a ``.safetensors`` file (``from_open_clip("ViT-B-16", "weights.safetensors")``)."""
    if isinstance(source, torch.nn.Module):
        model_cfg, preprocess_cfg = _instance_cfg(source)
        state, origin = dict(source.state_dict()), type(source).__name__
    elif weights is None:
        model_cfg, preprocess_cfg, state = _read_dir(Path(source))
        origin = str(source)
    else:
        import open_clip

        model_cfg = open_clip.get_model_config(str(source))
        if model_cfg is None:
            raise ConversionError(f"open_clip has no model named {source!r}; see open_clip.list_models()")
        if not str(weights).endswith(".safetensors"):
            raise ConversionError(f"{weights}: vlprune reads safetensors only; re-save it with "
                                  "safetensors.torch.save_file(state_dict, 'weights.safetensors')")
        preprocess_cfg, state, origin = {}, load_file(str(weights)), str(weights)
    config = config_from_open_clip(model_cfg, preprocess_cfg)
    model = build_model(config)
    load_state_strict(model, to_ours(entries(config), state, origin, ("attn_mask",)), origin)
    return model.eval()


def open_clip_config(config: ModelConfig) -> dict:
    """open_clip's ``model_cfg`` and ``preprocess_cfg`` for a uniform vlprune CLIP config."""
    v, t = config.vision, config.text
    problems = []
    if config.kind != "clip" or t.flavour != "clip":
        problems.append("only CLIP dual encoders")
    if v.act != t.act or v.act not in ("gelu", "quick_gelu"):
        problems.append(f"one activation for both towers, gelu or quick_gelu (vision {v.act}, text {t.act})")
    if (v.layer_norm_eps, t.layer_norm_eps) != (EPS, EPS) or v.patch_bias or not (v.qkv_bias and t.qkv_bias):
        problems.append(f"LayerNorm eps {EPS}, bias-free patch embedding, q/k/v biases")
    widths = {"vision": (v.width, v.intermediate_size[0]), "text": (t.width, t.intermediate_size[0])}
    ratios = {k: hidden / width for k, (width, hidden) in widths.items()}
    if any(int(widths[k][0] * r) != widths[k][1] for k, r in ratios.items()):
        problems.append(f"MLP widths that width x mlp_ratio reproduces ({widths})")
    if problems:
        raise ConversionError(f"{config.name or 'this model'} cannot be written as an open_clip model: open_clip "
                              "needs " + "; ".join(problems) + ". Keep it in vlprune's format (vlprune.save)")
    pool = {"pool_type": "argmax"} if t.pool == "argmax" or t.eot_token_id in (None, t.vocab_size - 1) else \
        {"pool_type": "eos", "eos_id": t.eot_token_id}
    model_cfg = {"embed_dim": config.embed_dim, "quick_gelu": v.act == "quick_gelu",
                 "vision_cfg": {"image_size": v.image_size, "layers": v.num_layers, "width": v.width,
                                "head_width": v.head_dim, "mlp_ratio": ratios["vision"], "patch_size": v.patch_size,
                                "no_ln_pre": not v.ln_pre,
                                "pool_type": {ours: theirs for theirs, ours in _VISION_POOLS.items()}[v.pool]},
                 "text_cfg": {"context_length": t.max_length, "vocab_size": t.vocab_size, "width": t.width,
                              "heads": t.num_heads[0], "layers": t.num_layers, "mlp_ratio": ratios["text"], **pool}}
    preprocess_cfg = {"size": v.image_size, "mode": "RGB", "mean": list(v.image_mean), "std": list(v.image_std),
                      "interpolation": "bicubic", "resize_mode": v.resize}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}


def to_open_clip(model: Model, directory: str | Path) -> Path:
    """Write ``model`` in open_clip's ``local-dir`` layout (zero-padded to stock shapes when structurally
    pruned); load it with ``open_clip.create_model("local-dir:" + directory)``. open_clip's centre crop rounds
    its offset: a model converted from transformers then crops one pixel differently on odd excesses."""
    stock, state = padded_state(model)
    cfg = open_clip_config(stock)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(to_theirs(entries(stock), state), str(directory / WEIGHT_FILES[0]))
    (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return directory
