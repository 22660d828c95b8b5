"""Apply a ``PrunePlan``: softly (``StructureMask`` on each block; the model keeps its shapes) or physically
(a new, smaller model whose config lists per-layer heads, FFN widths and the ``layer_map``).

Masked and physical pruning compute the same function: a removed head contributes nothing to its layer's
output projection, a removed neuron nothing to ``fc2``, a dropped layer is the identity; the output biases stay.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch

from vlprune.config import ModelConfig, TowerConfig
from vlprune.models.io import Model, build_model, load_state_strict
from vlprune.models.layers import StructureMask
from vlprune.structured.plan import PrunePlan, TowerPlan, tower_config

_PREFIX = {"vision": "visual.blocks.", "text": "text.blocks."}
_BLOCK_KEY = re.compile(r"^(visual|text)\.blocks\.(\d+)\.(.+)$")
_HEAD_ROWS = ("attn.q.weight", "attn.q.bias", "attn.k.weight", "attn.k.bias", "attn.v.weight", "attn.v.bias")
_NEURON_ROWS = ("mlp.fc1.weight", "mlp.fc1.bias")


def blocks(model: Model, tower: str) -> torch.nn.ModuleList:
    """The transformer blocks of ``tower``."""
    tower_config(model.config, tower)
    return model.visual.blocks if tower == "vision" else model.text.blocks


def _check_model(model: Model) -> None:
    if getattr(model, "reduction", None) is not None:
        raise ValueError("structured pruning needs the plain model: remove the token-reduction method first "
                         "(vlprune.apply(model, None))")


def _kept(total: int, removed: tuple[int, ...]) -> list[int]:
    gone = set(removed)
    return [i for i in range(total) if i not in gone]


def _keep_mask(total: int, removed: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(total, dtype=like.dtype, device=like.device)
    mask[list(removed)] = 0
    return mask


def apply_masks(model: Model, plan: PrunePlan) -> Model:
    """Install the plan as ``StructureMask``s (replacing any earlier ones); returns ``model``."""
    _check_model(model)
    plan = plan.validate(model.config)
    clear_masks(model)
    like = next(model.parameters())
    for tower, tower_plan in plan.towers.items():
        cfg = tower_config(model.config, tower)
        for i, block in enumerate(blocks(model, tower)):
            heads, neurons = tower_plan.heads.get(i), tower_plan.neurons.get(i)
            block.structure = StructureMask(
                heads=_keep_mask(cfg.num_heads[i], heads, like) if heads else None,
                neurons=_keep_mask(cfg.intermediate_size[i], neurons, like) if neurons else None,
                drop=i in tower_plan.layers)
    return model


def clear_masks(model: Model) -> Model:
    """Remove every ``StructureMask``: the model is exactly the unpruned one again."""
    for tower in ("vision", "text"):
        for block in blocks(model, tower):
            block.structure = None
    return model


@contextmanager
def masked(model: Model, plan: PrunePlan) -> Iterator[Model]:
    """``with masked(model, plan):`` the model behaves as pruned by ``plan``; masks are cleared on exit."""
    apply_masks(model, plan)
    try:
        yield model
    finally:
        clear_masks(model)


def pruned_tower_config(cfg: TowerConfig, plan: TowerPlan) -> TowerConfig:
    """The config of a tower after ``plan``: kept layers with their remaining heads / FFN widths, and the
    original index of each kept layer in ``layer_map``."""
    kept = _kept(cfg.num_layers, plan.layers)
    return replace(cfg, num_layers=len(kept),
                   num_heads=tuple(cfg.num_heads[i] - len(plan.heads.get(i, ())) for i in kept),
                   intermediate_size=tuple(cfg.intermediate_size[i] - len(plan.neurons.get(i, ())) for i in kept),
                   layer_map=tuple(cfg.layer_map[i] for i in kept))


def pruned_config(config: ModelConfig, plan: PrunePlan) -> ModelConfig:
    plan = plan.validate(config)
    return replace(config, vision=pruned_tower_config(config.vision, plan.tower("vision")),
                   text=pruned_tower_config(config.text, plan.tower("text")))


def _slice_block_tensor(name: str, value: torch.Tensor, head_idx: torch.Tensor, neuron_idx: torch.Tensor
                        ) -> torch.Tensor:
    """One block tensor restricted to the kept heads (q/k/v rows, o columns) and neurons (fc1 rows, fc2 columns)."""
    if name in _HEAD_ROWS:
        return value.index_select(0, head_idx)
    if name == "attn.o.weight":
        return value.index_select(1, head_idx)
    if name in _NEURON_ROWS:
        return value.index_select(0, neuron_idx)
    if name == "mlp.fc2.weight":
        return value.index_select(1, neuron_idx)
    return value


def prune(model: Model, plan: PrunePlan) -> Model:
    """A new, physically smaller model without the heads, neurons and layers ``plan`` removes (eval mode).

    The input model is left unchanged; its masks (if any) are not carried over.
    """
    _check_model(model)
    plan = plan.validate(model.config)
    config = pruned_config(model.config, plan)
    index: dict[tuple[str, int], tuple[int, torch.Tensor, torch.Tensor]] = {}
    for tower in ("vision", "text"):
        cfg, tower_plan = tower_config(model.config, tower), plan.tower(tower)
        for new, old in enumerate(_kept(cfg.num_layers, tower_plan.layers)):
            heads = _kept(cfg.num_heads[old], tower_plan.heads.get(old, ()))
            rows = torch.tensor([h * cfg.head_dim + j for h in heads for j in range(cfg.head_dim)], dtype=torch.long)
            neurons = torch.tensor(_kept(cfg.intermediate_size[old], tower_plan.neurons.get(old, ())),
                                   dtype=torch.long)
            index[(_PREFIX[tower], old)] = (new, rows, neurons)
    state = {}
    for key, value in model.state_dict().items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            state[key] = value.detach().clone()
            continue
        prefix, old, name = match.group(1) + ".blocks.", int(match.group(2)), match.group(3)
        if (prefix, old) not in index:
            continue
        new, rows, neurons = index[(prefix, old)]
        state[f"{prefix}{new}.{name}"] = _slice_block_tensor(name, value.detach(), rows.to(value.device),
                                                             neurons.to(value.device)).clone()
    like = next(model.parameters())
    with warnings.catch_warnings():  # layers pruned to 0 heads / 0 neurons: torch warns that their init is a no-op
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        smaller = build_model(config)
    smaller = smaller.to(device=like.device, dtype=like.dtype)
    load_state_strict(smaller, state, "pruned state")
    return smaller.eval()
