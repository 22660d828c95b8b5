"""Zero-padded export of structurally pruned models to stock (uniform) shapes.

Libraries such as transformers and open_clip need every layer of a tower to have the same head count and MLP
width, and every original layer present. A pruned vlprune model is padded to the smallest such shape that holds
it — per tower ``width // head_dim`` heads, the widest kept MLP, layers up to the last kept original layer —
with zeros, which is exact:

* an added head has zero q/k/v rows and zero output columns, so it adds nothing;
* an added MLP unit has zero input row and bias (every activation vlprune supports maps 0 to 0) and zero output
  column;
* a removed layer of a pre-LN tower becomes an identity layer (zero sub-layers; the residuals pass through).

The cost: the exported model has the stock parameter count and FLOPs — the pruning saves nothing outside
vlprune. A removed layer of a post-LN tower (BERT-style text encoders) cannot be an identity (its LayerNorms act
on the residual), so such models raise ``ConversionError``; keep them in vlprune's own format (``vlprune.save``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from vlprune.config import ModelConfig, TextConfig, TowerConfig
from vlprune.models.convert.mapping import ConversionError
from vlprune.models.io import Model

_ATTENTIONS = ("attn", "cross_attn")


def stock_tower(cfg: TowerConfig, owner: str) -> TowerConfig:
    """The uniform tower config that holds ``cfg`` (``cfg`` itself when it is already uniform and complete)."""
    if cfg.width % cfg.head_dim:
        raise ConversionError(f"{owner}: width {cfg.width} is not a multiple of head_dim {cfg.head_dim}, so no stock "
                              "shape holds it; keep the model in vlprune's format (vlprune.save)")
    layers = cfg.layer_map[-1] + 1 if cfg.num_layers else 0
    missing = sorted(set(range(layers)) - set(cfg.layer_map))
    if missing and not cfg.pre_norm:
        raise ConversionError(f"{owner}: original layers {missing} were removed; a post-LN layer cannot be an exact "
                              "identity, so this model has no zero-padded stock export; keep it in vlprune's format "
                              "(vlprune.save)")
    extra = {}
    if isinstance(cfg, TextConfig) and cfg.cross_attention_layers:
        extra["cross_attention_layers"] = tuple(cfg.layer_map[i] for i in cfg.cross_attention_layers)
    return replace(cfg, num_layers=layers, num_heads=cfg.width // cfg.head_dim,
                   intermediate_size=max(cfg.intermediate_size, default=0), layer_map=None, **extra)


def stock_config(config: ModelConfig) -> ModelConfig:
    return replace(config, vision=stock_tower(config.vision, "vision"), text=stock_tower(config.text, "text"))


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))], dim=0)


def _pad_cols(t: torch.Tensor, cols: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(t.shape[0], cols - t.shape[1])], dim=1)


def _pad_block(block: dict[str, torch.Tensor], inner: int, hidden: int) -> dict[str, torch.Tensor]:
    """One block's tensors (keys relative to the block) padded to ``inner`` = heads·head_dim and ``hidden``."""
    out = dict(block)
    for attn in _ATTENTIONS:
        if f"{attn}.q.weight" not in block:
            continue
        empty = block[f"{attn}.q.weight"].shape[0] == 0  # 0 heads: our layer outputs zeros, bias included
        for p in "qkv":
            out[f"{attn}.{p}.weight"] = _pad_rows(block[f"{attn}.{p}.weight"], inner)
            if f"{attn}.{p}.bias" in block:
                out[f"{attn}.{p}.bias"] = _pad_rows(block[f"{attn}.{p}.bias"], inner)
        out[f"{attn}.o.weight"] = _pad_cols(block[f"{attn}.o.weight"], inner)
        out[f"{attn}.o.bias"] = block[f"{attn}.o.bias"] * (0.0 if empty else 1.0)
    empty = block["mlp.fc1.weight"].shape[0] == 0
    out["mlp.fc1.weight"] = _pad_rows(block["mlp.fc1.weight"], hidden)
    out["mlp.fc1.bias"] = _pad_rows(block["mlp.fc1.bias"], hidden)
    out["mlp.fc2.weight"] = _pad_cols(block["mlp.fc2.weight"], hidden)
    out["mlp.fc2.bias"] = block["mlp.fc2.bias"] * (0.0 if empty else 1.0)
    return out


def _identity_block(template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pre-LN block that passes its input through: unit LayerNorms, every projection zero."""
    return {k: torch.ones_like(v) if k.startswith("norm") and k.endswith("weight") else torch.zeros_like(v)
            for k, v in template.items()}


def padded_state(model: Model) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(stock config, state dict of the zero-padded model); the model's own state when nothing needs padding."""
    config = model.config
    stock = stock_config(config)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if stock == config:
        return config, state
    out = {k: v for k, v in state.items() if ".blocks." not in k}
    for prefix, cfg, new in (("visual", config.vision, stock.vision), ("text", config.text, stock.text)):
        if not new.num_layers:
            continue
        inner, hidden = new.num_heads[0] * new.head_dim, new.intermediate_size[0]
        padded = {}
        for j, original in enumerate(cfg.layer_map):
            head = f"{prefix}.blocks.{j}."
            padded[original] = _pad_block({k[len(head):]: v for k, v in state.items() if k.startswith(head)},
                                          inner, hidden)
        for i in range(new.num_layers):
            block = padded.get(i)
            if block is None:
                template = padded[next(iter(padded))]
                block = _identity_block({k: v for k, v in template.items() if not k.startswith(("cross_attn",
                                                                                               "norm_cross"))})
            out.update({f"{prefix}.blocks.{i}.{k}": v for k, v in block.items()})
    return stock, out
