"""The MoPE-CLIP pruning recipes (paper Algorithm 2), for MoPE and every baseline on the same path.

* ``stage='finetune'``: width first (remove the lowest-scored heads and neuron groups), distil; then depth
  (score the layers of the width-pruned model, drop the lowest), distil again.
* ``stage='pretrain'``: every table is computed on the original model, width and depth are pruned at once,
  then one distillation.

Before scoring, every method rewires the FFN neurons by their gradient importance (DynaBERT), so neuron
groups are the same for all methods and only the ranking differs. ``every-other-layer`` is depth only.
Data (``PruneConfig.data`` / ``val_data``, the ``--data`` grammar through ``vlprune.data.pairs.open_pairs``):
Taylor scores, rewiring and distillation on ``data`` (default the toy world's ``train`` split), MoPE's Z on the
first ``val_pairs`` images of ``val_data`` with their first caption (default ``val``); report on ``test``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlprune.config import requirer
from vlprune.data.pairs import Collate, open_pairs
from vlprune.data.sources import parse_data
from vlprune.models.flops import model_gflops
from vlprune.models.io import Model
from vlprune.structured.budget import depth_plan, target_count, tower_params, width_plan
from vlprune.structured.config import PruneConfig
from vlprune.structured.importance import (
    CostTable,
    every_other_layer_table,
    magnitude_table,
    mope_table,
    random_table,
    taylor_table,
)
from vlprune.structured.plan import PrunePlan
from vlprune.structured.prune import blocks, prune
from vlprune.structured.rewire import rewire, taylor_importance
from vlprune.structured.towers import Batch, Pairs
from vlprune.tokenizer import WordTokenizer
from vlprune.train.distill import distil
from vlprune.train.trainer import TrainConfig

_check = requirer("PruneConfig")


@dataclass
class PruneResult:
    """The pruned model, a log of every step (plans, sizes, metrics) and the cost tables used."""

    model: Model
    steps: list[dict[str, Any]] = field(default_factory=list)
    tables: list[CostTable] = field(default_factory=list)


def score_table(method: str, model: Model, tower: str, kinds: tuple[str, ...], cfg: PruneConfig,
                val: list[Batch], grad: list[Batch]) -> CostTable:
    """The cost table of ``method`` for ``kinds`` of ``tower`` on the current model."""
    if method == "mope":
        return mope_table(model, tower, val, kinds, cfg.groups, cfg.metric, cfg.fast)
    if method == "magnitude":
        return magnitude_table(model, tower, kinds, cfg.groups)
    if method == "taylor":
        return taylor_table(model, tower, taylor_importance(model, tower, grad), kinds, cfg.groups)
    if method == "random":
        return random_table(model, tower, kinds, cfg.groups, cfg.seed)
    if kinds != ("layer",):
        raise ValueError(f"every-other-layer ranks layers only, not {kinds}")
    return every_other_layer_table(model, tower, cfg.groups)


def width_target(model: Model, tower: str, target: int, keep_layers: float) -> int:
    """Parameters to keep after the width step so that keeping ``keep_layers`` of the layers meets ``target``."""
    block_params = sum(p.numel() for b in blocks(model, tower) for p in b.parameters())
    fixed = tower_params(model, tower) - block_params
    return int(fixed + (target - fixed) / keep_layers)


def sizes(model: Model) -> dict[str, Any]:
    """Parameters, analytic GFLOPs and per-layer shapes of a model."""
    cfg = model.config
    return {"params": model.num_params(), "vision_params": model.num_params("vision"),
            "text_params": model.num_params("text"), **model_gflops(cfg),
            "shapes": {t: {"num_heads": list(c.num_heads), "intermediate_size": list(c.intermediate_size),
                           "layer_map": list(c.layer_map)} for t, c in (("vision", cfg.vision), ("text", cfg.text))}}


class _Run:
    """State of one recipe run: the student, the teacher, data, the log."""

    def __init__(self, model: Model, tokenizer: WordTokenizer, cfg: PruneConfig, out_dir: Path,
                 evaluate: Callable[[Model], dict] | None, progress: bool, cache: dict | None):
        self.cfg, self.out_dir, self.evaluate, self.progress = cfg, out_dir, evaluate, progress
        self.cache = cache
        self.teacher = copy.deepcopy(model).eval()
        self.student = copy.deepcopy(model).eval()
        size = model.config.vision.image_size
        data, val_data = parse_data(cfg.data), parse_data(cfg.val_data)
        self.collate = Collate(tokenizer, model.config.vision, truncate=data.kind != "toyworld")
        val_collate = Collate(tokenizer, model.config.vision, truncate=val_data.kind != "toyworld")
        val = open_pairs(val_data, size, cfg.val_pairs, split="val", per_image=True)
        self.val = Pairs.from_items(val, val_collate).batches(cfg.batch_size)
        self.train_data = open_pairs(data, size)
        _check(cfg.grad_pairs <= len(self.train_data), "grad_pairs", cfg.grad_pairs,
               f"at most the {len(self.train_data)} pairs of {data.text}")
        self.grad = Pairs.from_items([self.train_data[i] for i in range(cfg.grad_pairs)], self.collate
                                     ).batches(cfg.distill_batch)
        self.result = PruneResult(self.student)

    def log(self, step: str, evaluate: bool = True, **extra: Any) -> None:
        entry = {"step": step, **extra, **sizes(self.student)}
        if evaluate and self.evaluate is not None:
            entry["eval"] = self.evaluate(self.student)
        self.result.steps.append(entry)

    def table(self, tower: str, kinds: tuple[str, ...]) -> CostTable:
        """Score the current student; tables of the (rewired) original model are shared through ``cache``."""
        cfg = self.cfg
        key = (cfg.method, tower, kinds, cfg.groups, cfg.metric, cfg.data, cfg.val_data, cfg.val_pairs,
               cfg.grad_pairs, cfg.fast, cfg.seed)
        on_original = len(self.result.steps) == 1
        if self.cache is not None and on_original and key in self.cache:
            table = copy.deepcopy(self.cache[key])
        else:
            table = score_table(cfg.method, self.student, tower, kinds, cfg, self.val, self.grad)
            if self.cache is not None and on_original:
                self.cache[key] = copy.deepcopy(table)
        table.info.update(step="width" if "head" in kinds else "depth", model_params=self.student.num_params())
        self.result.tables.append(table)
        return table

    def prune(self, step: str, plans: dict[str, Any]) -> bool:
        """Apply the plans; False (and no log entry) when they remove nothing."""
        plan = PrunePlan(plans)
        if all(p.is_empty() for p in plan.towers.values()):
            return False
        self.student = prune(self.student, plan)
        self.log(step, plan=plan.to_dict())
        return True

    def distil(self, step: str) -> None:
        cfg = self.cfg
        if cfg.distill_steps == 0:
            return
        train = TrainConfig(steps=cfg.distill_steps, batch_size=cfg.distill_batch, lr=cfg.lr,
                            warmup_steps=cfg.distill_steps // 10, ckpt_every=cfg.distill_steps,
                            log_every=max(1, cfg.distill_steps // 10), seed=cfg.seed)
        metrics = distil(self.student, self.teacher, self.train_data, self.collate, train,
                         self.out_dir / f"distil-{step}", cfg.towers, cfg.weights, self.progress)
        self.log(f"distil-{step}", train_metrics=metrics)


def run_recipe(model: Model, tokenizer: WordTokenizer, cfg: PruneConfig, out_dir: str | Path,
               evaluate: Callable[[Model], dict] | None = None, progress: bool = True,
               cache: dict | None = None) -> PruneResult:
    """Prune ``model`` (left unchanged) to ``cfg.target_params`` of each pruned tower; ``evaluate(model)`` is
    logged after every step. Distillation checkpoints go under ``out_dir``. ``cache`` (a dict the caller keeps)
    shares the cost tables of the original model between runs on the same model at other budgets."""
    run = _Run(model, tokenizer, cfg, Path(out_dir), evaluate, progress, cache)
    targets = {t: target_count(model, t, cfg.target_params) for t in cfg.towers}
    run.log("base", evaluate=False)
    for tower in cfg.towers:
        rewire(run.student, tower, taylor_importance(run.student, tower, run.grad).neurons)
    layer_tables = {}
    if cfg.stage == "pretrain":
        layer_tables = {t: run.table(t, ("layer",)) for t in cfg.towers}
    if cfg.method != "every-other-layer":
        widths = {t: width_target(run.student, t, targets[t], cfg.layer_fraction) for t in cfg.towers}
        tables = {t: run.table(t, ("head", "group")) for t in cfg.towers}
        pruned = run.prune("width", {t: width_plan(run.student, tables[t], widths[t]) for t in cfg.towers})
        if pruned and cfg.stage == "finetune":
            run.distil("width")
    needs_depth = [t for t in cfg.towers if tower_params(run.student, t) > targets[t]]
    if needs_depth:
        if cfg.stage == "finetune":
            layer_tables = {t: run.table(t, ("layer",)) for t in needs_depth}
        run.prune("depth", {t: depth_plan(run.student, layer_tables[t], targets[t]) for t in needs_depth})
        if cfg.stage == "finetune":
            run.distil("depth")
    if cfg.stage == "pretrain" and len(run.result.steps) > 1:
        run.distil("all")
    run.result.model = run.student
    return run.result
