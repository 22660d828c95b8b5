"""An objective-agnostic training loop: AdamW, warm-up + cosine LR, gradient accumulation, data parallelism
over ``torchrun`` ranks, atomic safetensors checkpoints and exact resume.

Determinism: the global batch of step ``s`` is a pure function of ``(seed, s)``, and every random number
generator (torch, numpy, python ``random`` and ``TrainContext.generator``) is reseeded from
``(seed, step, rank, micro-batch)`` before each micro-batch. A resumed run therefore repeats an uninterrupted
one bit for bit (same hardware, thread count and world size).

Batches are pure functions of ``(dataset, seed, step, rank, micro-batch)``, so ``workers > 0`` builds them ahead
of time in that many ``DataLoader`` worker processes (the toy world renders on the CPU; on a GPU that is the
bottleneck without workers) and the weights are the same as with ``workers = 0``.

Steps are counted from 1: ``TrainContext.step`` is the number the step being computed will have once done,
the JSONL ``step`` field and checkpoint ``step-000100`` count completed steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vlprune import distributed as D
from vlprune.config import ConfigError, reject_unknown_fields, requirer
from vlprune.models.io import CheckpointError, load_state_strict
from vlprune.train.checkpoint import (
    CheckpointState,
    checkpoint_candidates,
    prune_checkpoints,
    read_checkpoint,
    set_rng_state,
    write_checkpoint,
)


class TrainingStopped(RuntimeError):
    """A step failed (non-finite loss, gradient or weights, or an optimizer error); the run stopped before the
    failed update reached a checkpoint. The message names the step and the last good checkpoint."""


class NonFiniteLossError(TrainingStopped):
    """The loss (or gradient norm) became NaN/inf; the run stopped before updating the weights."""


MAX_LR = 1e3   # refused above: every AdamW step would move each weight by ~lr, far past any weight's scale
WARN_LR = 1.0  # warned above


# -- config ---------------------------------------------------------------------------------------------

_check = requirer("TrainConfig")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run; every bad value raises ``ConfigError`` (a ``ValueError``)."""

    steps: int                          # total optimizer steps
    batch_size: int                     # global batch size, split evenly over ranks and micro-batches
    lr: float = 1e-3
    weight_decay: float = 0.05          # AdamW decay, only on parameters with ndim >= 2
    warmup_steps: int = 0               # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    grad_accum: int = 1                 # micro-batches per step
    max_grad_norm: float | None = 1.0   # None: no clipping
    seed: int = 0
    ckpt_every: int = 100               # steps between checkpoints (one is also written at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    amp: bool = False                   # bf16 autocast, only on CUDA

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "ckpt_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, value, "an int >= 1")
        _check(_is_real(self.lr) and 0 < self.lr <= MAX_LR, "lr", self.lr, f"a number in (0, {MAX_LR:g}]")
        if self.lr > WARN_LR:
            warnings.warn(f"TrainConfig.lr={self.lr:g}: AdamW moves every weight by about lr per step, so an lr "
                          f"above {WARN_LR:g} usually diverges (CLIP / ALBEF recipes use 1e-4 to 5e-4)", stacklevel=3)
        _check(_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay,
               "a finite number >= 0")
        _check(_is_int(self.warmup_steps) and 0 <= self.warmup_steps <= self.steps, "warmup_steps",
               self.warmup_steps, f"an int in [0, steps={self.steps}]")
        _check(_is_real(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio,
               "a number in [0, 1]")
        _check(self.batch_size % self.grad_accum == 0, "grad_accum", self.grad_accum,
               f"a divisor of batch_size={self.batch_size}")
        _check(self.max_grad_norm is None or (_is_real(self.max_grad_norm) and self.max_grad_norm > 0),
               "max_grad_norm", self.max_grad_norm, "None or a finite number > 0")
        _check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed, "an int in [0, 2**63)")
        _check(isinstance(self.amp, bool), "amp", self.amp, "a bool")
        for name in ("lr", "weight_decay", "min_lr_ratio", "max_grad_norm"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"TrainConfig: expected a JSON object, got {type(data).__name__}")
        reject_unknown_fields(cls, data)
        missing = [name for name in ("steps", "batch_size") if name not in data]
        if missing:
            raise ConfigError(f"TrainConfig: missing required field(s) {missing}")
        return cls(**data)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base LR at step ``step`` (1-based): ``step / warmup_steps`` during warm-up, then a
    cosine from 1 (at ``warmup_steps``) down to ``min_lr_ratio`` (reached at the last step)."""
    if not 1 <= step <= config.steps:
        raise ValueError(f"step={step} is out of range: expected 1..{config.steps}")
    if step <= config.warmup_steps:
        return step / config.warmup_steps
    progress = (step - config.warmup_steps) / (config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of step ``step`` (1-based) for the default parameter groups."""
    return config.lr * lr_factor(step, config)


# -- determinism ----------------------------------------------------------------------------------------

def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python ``random``; call it before building the model."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def epoch_permutation(seed: int, epoch: int, dataset_len: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the dataset."""
    generator = torch.Generator().manual_seed(derive_seed("data", seed, epoch))
    return torch.randperm(dataset_len, generator=generator)


def global_batch_indices(step: int, dataset_len: int, batch_size: int, seed: int) -> list[int]:
    """Dataset indices of the global batch of step ``step`` (1-based); the last incomplete batch of each
    epoch is dropped."""
    per_epoch = dataset_len // batch_size
    if per_epoch == 0:
        raise ValueError(f"the dataset has {dataset_len} items, fewer than one global batch of {batch_size}")
    epoch, position = divmod(step - 1, per_epoch)
    order = epoch_permutation(seed, epoch, dataset_len)
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def rank_batch_indices(step: int, micro: int, dataset_len: int, config: TrainConfig, rank: int = 0,
                       world_size: int = 1) -> list[int]:
    """Dataset indices of micro-batch ``micro`` of rank ``rank`` at step ``step``: the rank's contiguous
    ``batch_size / world_size`` share of ``global_batch_indices``, cut into ``grad_accum`` micro-batches.

    This is the distributed sampler: over ranks and micro-batches the slices partition the global batch, and the
    global batches of an epoch partition one permutation, so within an epoch every index but the dropped
    remainder is loaded exactly once, by one rank (and one DataLoader worker, which builds whole micro-batches)."""
    per_rank = config.batch_size // world_size
    size = per_rank // config.grad_accum
    first = rank * per_rank + micro * size
    return global_batch_indices(step, dataset_len, config.batch_size, config.seed)[first:first + size]


@dataclass
class MicroBatches:
    """The collated micro-batch ``(step, micro)`` of one rank, as a map-style dataset (for ``DataLoader``
    workers): the items of ``rank_batch_indices``, so it depends on nothing but its key."""

    dataset: Sequence
    collate: Callable[[list], Any]
    config: TrainConfig
    rank: int = 0
    world_size: int = 1

    def __getitem__(self, key: tuple[int, int]) -> Any:
        step, micro = key
        indices = rank_batch_indices(step, micro, len(self.dataset), self.config, self.rank, self.world_size)
        return self.collate([self.dataset[i] for i in indices])


@dataclass
class TrainContext:
    """What an objective may need besides the model and batch.

    ``generator`` is a CPU ``torch.Generator`` seeded from ``(seed, step, rank, micro_step)``: draw all of an
    objective's randomness from it (on CPU, then move) so that resumed runs repeat it.
    """

    step: int
    rank: int
    world_size: int
    generator: torch.Generator
    device: torch.device
    micro_step: int = 0


Objective = Callable[[nn.Module, Any, TrainContext], dict[str, torch.Tensor]]


NO_DECAY_NAMES = ("pos_embed", "cls_token")  # like timm's ``no_weight_decay``: decay would erase position


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on trainable matrices (ndim >= 2); none on biases, norms, scalars, position
    embeddings and [CLS] tokens."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and not n.endswith(NO_DECAY_NAMES)]
    no_decay = [p for n, p in params if p.ndim < 2 or n.endswith(NO_DECAY_NAMES)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


# -- metrics file ---------------------------------------------------------------------------------------

def _trim_jsonl(path: Path, max_step: int) -> None:
    """Drop the lines logged after ``max_step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


# -- trainer --------------------------------------------------------------------------------------------

class Trainer:
    """Trains ``model`` on ``objective(model, collate(items), ctx)["loss"]`` for ``config.steps`` steps.

    ``param_groups_fn(model)`` may replace the default AdamW groups (dicts with ``params`` and optionally
    ``lr``/``weight_decay``; the schedule scales each group's own ``lr``). Batches are moved to ``device``
    (tensors inside dicts, lists and tuples). Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    initialised here, rank 0's weights are broadcast at the start, and gradients are averaged over ranks.
    """

    def __init__(self, model: nn.Module, objective: Objective, dataset: Sequence, collate: Callable[[list], Any],
                 config: TrainConfig, out_dir: str | Path,
                 param_groups_fn: Callable[[nn.Module], list[dict[str, Any]]] | None = None, *,
                 device: str | torch.device | None = None, progress: bool = True, workers: int = 0) -> None:
        if not (_is_int(workers) and workers >= 0):
            raise ConfigError(f"workers={workers!r} is invalid: expected an int >= 0 (0: batches are built in the "
                              "training process)")
        self.workers = workers
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", D.local_rank())
            torch.cuda.set_device(self.device)
        D.init_distributed("nccl" if self.device.type == "cuda" else "gloo")
        self.rank, self.world_size = D.rank(), D.world_size()
        per_micro = config.batch_size // (self.world_size * config.grad_accum)
        if per_micro * self.world_size * config.grad_accum != config.batch_size:
            raise ConfigError(f"TrainConfig.batch_size={config.batch_size} is invalid: expected a multiple of "
                              f"world_size * grad_accum = {self.world_size} * {config.grad_accum}")
        if len(dataset) < config.batch_size:
            raise ValueError(f"the dataset has {len(dataset)} items, fewer than one global batch of "
                             f"{config.batch_size}")
        self.model = model.to(self.device)
        self.objective, self.dataset, self.collate, self.config = objective, dataset, collate, config
        self.out_dir = Path(out_dir)
        self.progress = progress
        groups = (param_groups_fn or (lambda m: default_param_groups(m, config.weight_decay)))(self.model)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, Any] = {}

    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    # -- the loop -------------------------------------------------------------------------------------------

    def fit(self, resume: bool = True, until: int | None = None) -> dict[str, Any]:
        """Train to ``config.steps``, resuming from ``out_dir``'s latest checkpoint if there is one (with
        ``resume=False`` an existing checkpoint is an error). ``until`` stops early, after that step's
        checkpoint, on the schedule of ``config.steps`` (run again with a later ``until`` to go on). Returns the
        last logged metrics."""
        if until is not None and not (_is_int(until) and 0 < until <= self.config.steps):
            raise ConfigError(f"until={until!r} is invalid: expected a step in [1, steps={self.config.steps}]")
        end = self.config.steps if until is None else until
        start = self._start(resume)
        if start >= end:
            return dict(self.last_metrics)
        self.model.train()
        batches = iter(self._batches(start + 1, end))
        bar = tqdm(total=self.config.steps, initial=start, desc="train", dynamic_ncols=True,
                   disable=not self.progress or self.rank != 0)
        last_log, tick = start, time.perf_counter()
        try:
            for step in range(start + 1, end + 1):
                values = self._step(step, batches)
                bar.update(1)
                if step % self.config.log_every == 0 or step == end:
                    now = time.perf_counter()
                    self._log(step, values, (now - tick) / (step - last_log))
                    bar.set_postfix(loss=f"{self.last_metrics['loss']:.4g}", lr=f"{self.last_metrics['lr']:.3g}")
                    last_log, tick = step, now
                if step % self.config.ckpt_every == 0 or step == end:
                    self._save(step)
        finally:
            bar.close()
        return dict(self.last_metrics)

    def _start(self, resume: bool) -> int:
        """Clean up after interrupted writes, load the latest checkpoint; returns the completed step count."""
        if self.rank == 0 and self.checkpoint_root.is_dir():
            for leftover in self.checkpoint_root.glob(".tmp-*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        candidates = checkpoint_candidates(self.out_dir)
        if candidates and not resume:
            raise FileExistsError(f"{self.out_dir} already holds checkpoints ({candidates[0].name}); pass "
                                  "resume=True to continue that run or use a fresh out_dir")
        state = self._newest_good_checkpoint(candidates)
        start = 0
        if state is None:
            D.broadcast_module_(self.model)
        else:
            start = self._load(state)
        if self.rank == 0:
            _trim_jsonl(self.metrics_path, start)
        D.barrier()
        return start

    def _context(self, step: int, micro: int) -> TrainContext:
        """Reseed every RNG from (seed, step, rank, micro) and build the objective's context."""
        key = (self.config.seed, step, self.rank, micro)
        torch.manual_seed(derive_seed("torch", *key))
        random.seed(derive_seed("python", *key))
        np.random.seed(derive_seed("numpy", *key) % 2**32)
        generator = torch.Generator().manual_seed(derive_seed("context", *key))
        return TrainContext(step=step, rank=self.rank, world_size=self.world_size, generator=generator,
                            device=self.device, micro_step=micro)

    def _batches(self, first: int, last: int) -> Iterable[Any]:
        """This rank's collated micro-batches of steps ``first..last`` in order, built here or by the workers."""
        batches = MicroBatches(self.dataset, self.collate, self.config, self.rank, self.world_size)
        keys = [(step, m) for step in range(first, last + 1) for m in range(self.config.grad_accum)]
        if self.workers == 0:
            return map(batches.__getitem__, keys)
        return torch.utils.data.DataLoader(batches, batch_size=None, sampler=keys, num_workers=self.workers,
                                           prefetch_factor=4, pin_memory=self.device.type == "cuda")

    def _step(self, step: int, batches: Iterator[Any]) -> dict[str, torch.Tensor]:
        """One optimizer step on the next ``grad_accum`` micro-batches of ``batches``; returns this rank's values
        (mean over micro-batches) plus ``grad_norm``."""
        cfg = self.config
        factor = lr_factor(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        use_amp = cfg.amp and self.device.type == "cuda"
        for m in range(cfg.grad_accum):
            ctx = self._context(step, m)
            batch = _to_device(next(batches), self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = self.objective(self.model, batch, ctx)
            values = _scalars(out, step)
            (out["loss"] / cfg.grad_accum).backward()
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / cfg.grad_accum
        # one collective agrees on finiteness and on which parameters got a gradient on some rank
        flags = torch.tensor([float(not torch.isfinite(sums["loss"]))] + [float(p.grad is not None)
                                                                         for p in self.params])
        flags = D.all_reduce_(flags.to(self.device), "max").cpu()
        if flags[0] > 0:
            self._stop(step, f"non-finite loss at step {step} (this rank: loss={sums['loss'].item()})")
        for p, has_grad in zip(self.params, flags[1:].tolist()):
            if has_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        D.all_reduce_mean_([p.grad for p in self.params if p.grad is not None])
        if cfg.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], cfg.max_grad_norm)
            if not torch.isfinite(norm):
                self._stop(step, f"non-finite gradient norm at step {step} (loss was finite)")
            sums["grad_norm"] = norm.detach().float()
        try:
            self.optimizer.step()
        except (RuntimeError, ValueError, OverflowError) as err:
            self._stop(step, f"the optimizer step failed at step {step} ({err})", TrainingStopped)
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            self._stop(step, f"the optimizer update of step {step} made weights non-finite (lr {cfg.lr:g} too "
                       "high?)", TrainingStopped, applied=True)
        return sums

    def _stop(self, step: int, what: str, error: type[TrainingStopped] = NonFiniteLossError,
              applied: bool = False) -> None:
        where = self.last_checkpoint or "none (no checkpoint was written yet)"
        when = "its weights were not saved" if applied else f"the run was stopped before the optimizer update of " \
            f"step {step}"
        raise error(f"{what}; {when}. Last good checkpoint: {where}")

    def _log(self, step: int, values: dict[str, torch.Tensor], seconds_per_step: float) -> None:
        """Average ``values`` over ranks; rank 0 appends a JSONL line."""
        keys = sorted(values)
        stacked = torch.stack([values[k].to(self.device) for k in keys])
        stacked = D.all_reduce_(stacked, "sum").cpu() / self.world_size
        lr = self.optimizer.param_groups[0]["lr"]
        record = {**dict(zip(keys, stacked.tolist())), "step": step, "lr": lr, "sec_per_step": seconds_per_step}
        self.last_metrics = record
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _save(self, step: int) -> None:
        """Rank 0 writes ``checkpoints/step-XXXXXX`` atomically and moves the ``latest`` pointer; the other
        ranks wait."""
        if self.rank == 0:
            per_epoch = len(self.dataset) // self.config.batch_size
            info = {"data_position": step, "epoch": step // per_epoch, "batch_in_epoch": step % per_epoch,
                    "samples_seen": step * self.config.batch_size, "dataset_len": len(self.dataset),
                    "world_size": self.world_size, "config": self.config.to_dict(),
                    "scheduler": {"step": step, "base_lrs": [g["base_lr"] for g in self.optimizer.param_groups]},
                    "metrics": self.last_metrics}
            write_checkpoint(self.checkpoint_root, step, self.model.state_dict(), self.optimizer.state_dict(), info)
            prune_checkpoints(self.checkpoint_root, step, self.config.keep_checkpoints)
        D.barrier()
        self.last_checkpoint = self.checkpoint_root / f"step-{step:06d}"

    def _newest_good_checkpoint(self, candidates: list[Path]) -> CheckpointState | None:
        """The first of ``candidates`` that verifies and parses; each one skipped is reported in one line. With
        candidates but none good, one ``CheckpointError`` and nothing is touched."""
        for path in candidates:
            try:
                return read_checkpoint(path, self.device)
            except CheckpointError as err:
                self._say(f"skipping checkpoint {path.name}: {err}")
        if not candidates:
            return None
        raise CheckpointError(f"no checkpoint in {self.checkpoint_root} can be resumed ({len(candidates)} tried, "
                              "each reported above); nothing was changed: restore a good copy, or move them away "
                              "to start afresh")

    def _load(self, state: CheckpointState) -> int:
        """Restore model, optimizer, RNG and metrics state from a verified checkpoint; returns its step."""
        load_state_strict(self.model, state.model, str(state.path / "model.safetensors"))
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{state.path / 'optimizer.json'} does not fit this model's optimizer ({err}); "
                                  "was the run started with another model or --tasks?") from None
        set_rng_state(state.rng, state.trainer)
        saved = TrainConfig.from_dict(state.trainer["config"])
        changed = sorted(k for k, v in saved.to_dict().items() if self.config.to_dict()[k] != v)
        if changed:
            warnings.warn(f"resuming {state.path} with changed config field(s) {changed}: the run will not repeat "
                          "an uninterrupted one", stacklevel=3)
        if state.trainer["dataset_len"] != len(self.dataset):
            warnings.warn(f"resuming {state.path}: the dataset had {state.trainer['dataset_len']} items, now "
                          f"{len(self.dataset)}", stacklevel=3)
        self.last_checkpoint = state.path
        self.last_metrics = state.trainer["metrics"]
        self._say(f"resuming from {state.path} (step {state.step})")
        return state.step

    def _say(self, message: str) -> None:
        """One line on stderr, from rank 0 only."""
        if self.rank == 0:
            print(f"vlprune: {message}", file=sys.stderr, flush=True)

def _scalars(out: Any, step: int) -> dict[str, torch.Tensor]:
    """Detached float copies of an objective's outputs, checked to be scalars with a ``loss``."""
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError(f"step {step}: the objective must return a dict with a 'loss' entry, got "
                        f"{type(out).__name__}{sorted(out) if isinstance(out, dict) else ''}")
    values = {}
    for key, value in out.items():
        value = torch.as_tensor(value)
        if value.numel() != 1:
            raise ValueError(f"step {step}: objective output {key!r} has shape {tuple(value.shape)}; "
                             "expected a scalar")
        values[key] = value.detach().float().reshape(())
    return values
