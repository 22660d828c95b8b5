"""Importance of prunable modules — attention heads, FFN neuron groups, whole layers — per tower: cost tables.

MoPE-CLIP eq. 1: ``MoPE_θ = Z[f] − Z[f − θ]``, where ``Z`` is the retrieval recall on a held-out split
(docs/mope.md, "What it computes": mean of TR/IR R@1,5,10; ``metric='tr'`` or ``'ir'`` keeps one direction, as
the paper's fine-tuning stage does for the vision / text tower) and ``f − θ`` is the model with module θ masked
out. A high MoPE means removing θ hurts: keep it. Baselines: weight ``magnitude``, first-order ``taylor``
(``rewire.py``), ``random``, and the depth-only ``every-other-layer``.

Fast MoPE: masking a module in layer l of one tower changes nothing before l and nothing in the other tower,
so the other tower's embeddings and the hidden states entering layer l are computed once and only blocks
≥ l are re-run (``fast=True``; equal to the naive full re-evaluation). Under ``torchrun`` the modules are
shared round-robin over the ranks and the scores summed (``all_reduce``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlprune import distributed as D
from vlprune.models.io import Model
from vlprune.retrieval import retrieval_metrics
from vlprune.structured.plan import PrunePlan, TowerPlan, tower_config
from vlprune.structured.prune import blocks, masked
from vlprune.structured.rewire import TaylorScores
from vlprune.structured.towers import Batch, Partial, begin, encode, finish, other, run

KINDS = ("head", "group", "layer")
METHODS = ("mope", "magnitude", "taylor", "random", "every-other-layer")
METRICS = ("mean_recall", "tr", "ir")


@dataclass(frozen=True)
class Module:
    """One prunable unit: head ``index`` / neuron group ``index`` of ``layer``, or the whole ``layer``."""

    tower: str
    kind: str
    layer: int
    index: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Module.kind={self.kind!r}: expected one of {KINDS}")

    @property
    def key(self) -> str:
        return f"{self.tower}.{self.layer}.{self.kind}" + ("" if self.kind == "layer" else f".{self.index}")


def neuron_groups(width: int, groups: int) -> list[list[int]]:
    """Split ``width`` (rewired) neurons into ``groups`` contiguous, near-equal groups (fewer if width < groups)."""
    if groups < 1:
        raise ValueError(f"groups={groups}: expected a positive number of FFN neuron groups per layer")
    return [chunk.tolist() for chunk in np.array_split(np.arange(width), min(groups, width)) if len(chunk)]


def modules(model: Model, tower: str, kinds: tuple[str, ...], groups: int) -> list[Module]:
    """Every module of the given kinds in ``tower``, layer by layer."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"module kinds {unknown} are unknown: expected some of {KINDS}")
    out = []
    for i, block in enumerate(blocks(model, tower)):
        if "head" in kinds:
            out += [Module(tower, "head", i, h) for h in range(block.attn.num_heads)]
        if "group" in kinds:
            out += [Module(tower, "group", i, g) for g in range(len(neuron_groups(block.mlp.hidden, groups)))]
        if "layer" in kinds:
            out.append(Module(tower, "layer", i))
    return out


def removal_plan(model: Model, module: Module, groups: int) -> PrunePlan:
    """The plan that removes just ``module``."""
    if module.kind == "head":
        plan = TowerPlan(heads={module.layer: (module.index,)})
    elif module.kind == "group":
        width = blocks(model, module.tower)[module.layer].mlp.hidden
        plan = TowerPlan(neurons={module.layer: tuple(neuron_groups(width, groups)[module.index])})
    else:
        plan = TowerPlan(layers=(module.layer,))
    return PrunePlan({module.tower: plan})


# -- cost tables ----------------------------------------------------------------------------------------

@dataclass
class CostTable:
    """Scores of one tower's modules (higher = more important); ``None`` where the method ranks no such kind."""

    method: str
    tower: str
    groups: int
    heads: list[list[float]] | None = None    # [layer][head]
    neuron_groups: list[list[float]] | None = None  # [layer][group]
    layers: list[float] | None = None         # [layer]
    info: dict[str, Any] = field(default_factory=dict)

    def score(self, module: Module) -> float:
        table = {"head": self.heads, "group": self.neuron_groups, "layer": self.layers}[module.kind]
        if table is None:
            raise ValueError(f"the {self.method} cost table has no {module.kind} scores")
        return table[module.layer] if module.kind == "layer" else table[module.layer][module.index]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostTable:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"CostTable: unknown field(s) {sorted(set(data) - known)}; known fields are "
                             f"{sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _table(method: str, tower: str, groups: int, model: Model, kinds: tuple[str, ...],
           score: Callable[[Module], float], info: dict[str, Any] | None = None) -> CostTable:
    """Fill a cost table from a per-module score function."""
    listed = modules(model, tower, kinds, groups)
    values = {m: float(score(m)) for m in listed}
    return _from_scores(method, tower, groups, model, kinds, values, info or {})


def _from_scores(method: str, tower: str, groups: int, model: Model, kinds: tuple[str, ...],
                 values: dict[Module, float], info: dict[str, Any]) -> CostTable:
    layers = range(len(blocks(model, tower)))
    table = CostTable(method, tower, groups, info=info)
    if "head" in kinds:
        table.heads = [[v for m, v in values.items() if m.kind == "head" and m.layer == i] for i in layers]
    if "group" in kinds:
        table.neuron_groups = [[v for m, v in values.items() if m.kind == "group" and m.layer == i] for i in layers]
    if "layer" in kinds:
        table.layers = [values[Module(tower, "layer", i)] for i in layers]
    return table


# -- MoPE -----------------------------------------------------------------------------------------------

def recall_score(image_emb: torch.Tensor, text_emb: torch.Tensor, metric: str = "mean_recall") -> float:
    """Z: mean of R@1,5,10 over both directions (``mean_recall``), image→text (``tr``) or text→image (``ir``)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {METRICS}")
    result = retrieval_metrics(image_emb @ text_emb.T, list(range(len(text_emb))))
    if metric == "mean_recall":
        return result["mean_recall"]
    prefix = "text_retrieval" if metric == "tr" else "image_retrieval"
    return float(np.mean([result[f"{prefix}_recall@{k}"] for k in (1, 5, 10)]))


def _pair(tower: str, mine: torch.Tensor, theirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, text) embeddings from one tower's and the other tower's."""
    return (mine, theirs) if tower == "vision" else (theirs, mine)


@torch.no_grad()
def _naive(model: Model, tower: str, todo: list[Module], batches: list[Batch], metric: str, groups: int
           ) -> tuple[dict[Module, float], float]:
    """Every module (and the full model): both towers re-run from the input."""
    def z() -> float:
        return recall_score(encode(model, "vision", batches), encode(model, "text", batches), metric)

    z_full, scores = z(), {}
    for module in todo:
        with masked(model, removal_plan(model, module, groups)):
            scores[module] = z_full - z()
    return scores, z_full


@torch.no_grad()
def _fast(model: Model, tower: str, todo: list[Module], batches: list[Batch], metric: str, groups: int
          ) -> tuple[dict[Module, float], float]:
    """The other tower once; modules of layer l re-run only blocks l.. of ``tower`` from the cached layer input."""
    theirs = encode(model, other(tower), batches)
    parts: list[Partial] = [begin(model, tower, b) for b in batches]

    def z(layer: int) -> float:
        mine = torch.cat([finish(model, tower, run(model, tower, p, layer), b) for p, b in zip(parts, batches)])
        return recall_score(*_pair(tower, mine, theirs), metric)

    z_full, scores = z(0), {}
    last = max((m.layer for m in todo), default=-1)
    for layer in range(last + 1):
        for module in (m for m in todo if m.layer == layer):
            with masked(model, removal_plan(model, module, groups)):
                scores[module] = z_full - z(layer)
        if layer < last:
            parts = [run(model, tower, p, layer, layer + 1) for p in parts]
    return scores, z_full


def mope_scores(model: Model, tower: str, todo: list[Module], batches: list[Batch], metric: str = "mean_recall",
                groups: int = 8, fast: bool = True) -> tuple[dict[Module, float], float]:
    """MoPE (eq. 1) of each module in ``todo`` (all of one tower) and Z of the full model."""
    tower_config(model.config, tower)
    if not batches:
        raise ValueError("MoPE needs held-out image-text pairs (got no batches)")
    if any(m.tower != tower for m in todo):
        raise ValueError(f"every module must be in the {tower} tower")
    was_training = model.training
    model.eval()
    try:
        return (_fast if fast else _naive)(model, tower, todo, batches, metric, groups)
    finally:
        model.train(was_training)


def mope_table(model: Model, tower: str, batches: list[Batch], kinds: tuple[str, ...] = KINDS, groups: int = 8,
               metric: str = "mean_recall", fast: bool = True) -> CostTable:
    """MoPE of every module of ``kinds`` in ``tower``, on the held-out pairs ``batches``.

    Modules are shared over ``torchrun`` ranks (round-robin) and the scores summed, so every rank gets the table.
    """
    start = time.perf_counter()
    listed = modules(model, tower, kinds, groups)
    found, z_full = mope_scores(model, tower, listed[D.rank()::D.world_size()], batches, metric, groups, fast)
    device = next(model.parameters()).device
    values = D.all_reduce_(torch.tensor([found.get(m, 0.0) for m in listed], dtype=torch.float64, device=device))
    info = {"metric": metric, "z_full": z_full, "pairs": sum(len(b["input_ids"]) for b in batches), "fast": fast,
            "seconds": time.perf_counter() - start, "ranks": D.world_size()}
    return _from_scores("mope", tower, groups, model, kinds, dict(zip(listed, values.tolist())), info)


# -- baselines ------------------------------------------------------------------------------------------

def _head_weights(block: torch.nn.Module, head: int) -> list[torch.Tensor]:
    d = block.attn.head_dim
    rows = slice(head * d, (head + 1) * d)
    return [block.attn.q.weight[rows], block.attn.k.weight[rows], block.attn.v.weight[rows],
            block.attn.o.weight[:, rows]]


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))


@torch.no_grad()
def magnitude_table(model: Model, tower: str, kinds: tuple[str, ...] = KINDS, groups: int = 8) -> CostTable:
    """L2 norm of a module's weights: a head's q/k/v rows and o columns, a group's fc1 rows and fc2 columns,
    a layer's weight matrices (MagnCLIP's criterion)."""
    towers_blocks = blocks(model, tower)

    def score(m: Module) -> float:
        block = towers_blocks[m.layer]
        if m.kind == "head":
            return _norm(_head_weights(block, m.index))
        if m.kind == "group":
            idx = neuron_groups(block.mlp.hidden, groups)[m.index]
            return _norm([block.mlp.fc1.weight[idx], block.mlp.fc2.weight[:, idx]])
        return _norm([p for p in block.parameters() if p.ndim >= 2])

    return _table("magnitude", tower, groups, model, kinds, score)


def taylor_table(model: Model, tower: str, scores: TaylorScores, kinds: tuple[str, ...] = KINDS,
                 groups: int = 8) -> CostTable:
    """First-order scores (``rewire.taylor_importance``): a group sums its neurons, a layer its heads and neurons."""
    towers_blocks = blocks(model, tower)

    def score(m: Module) -> float:
        if m.kind == "head":
            return float(scores.heads[m.layer][m.index])
        if m.kind == "group":
            idx = neuron_groups(towers_blocks[m.layer].mlp.hidden, groups)[m.index]
            return float(scores.neurons[m.layer][idx].sum())
        return float(scores.heads[m.layer].sum() + scores.neurons[m.layer].sum())

    return _table("taylor", tower, groups, model, kinds, score)


def random_table(model: Model, tower: str, kinds: tuple[str, ...] = KINDS, groups: int = 8, seed: int = 0
                 ) -> CostTable:
    """Uniform random scores (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return _table("random", tower, groups, model, kinds, lambda m: torch.rand((), generator=generator).item(),
                  {"seed": seed})


def every_other_layer_table(model: Model, tower: str, groups: int = 8) -> CostTable:
    """Depth only (EfficientVLM / BERT "every other"): odd layers go first (bottom up), then even layers
    from the top; layer 0 goes last. No width scores."""
    n = len(blocks(model, tower))
    order = list(range(1, n, 2)) + list(range(n - 1 - (n - 1) % 2, -1, -2))
    rank = {layer: position for position, layer in enumerate(order)}
    return _table("every-other-layer", tower, groups, model, ("layer",), lambda m: float(rank[m.layer]))
