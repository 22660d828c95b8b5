"""Wall-clock benchmark of the image tower, like timm's benchmark.py: one row per (method, batch size).

Warm-up, then the median of timed iterations; images/s at each batch size, latency at batch 1, peak memory
(CUDA allocator on GPU; peak-RSS growth on Linux CPU), analytic GFLOPs and params. Speedups are measured
against the base model *in the same process* and shown beside the FLOP-ideal speedup. Text-guided methods
(ELIP, TRIPS) get the guide of a random-token text, computed once outside the timed calls (the text tower's
cost is not part of the image tower's numbers); other methods ignore it.
"""

from __future__ import annotations

import csv
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from vlprune.method_registry import parse_method
from vlprune.models.flops import model_gflops
from vlprune.reduce.base import apply, vision_gflops

K = TypeVar("K")


@dataclass
class BenchRow:
    model: str
    method: str
    config: str
    batch: int
    images_per_s: float
    ms_per_batch: float
    vision_gflops: float
    params: int
    peak_mem_mb: float | None
    threads: int
    device: str
    dtype: str
    measured_speedup: float = 1.0
    ideal_speedup: float = 1.0
    ms_min: float = 0.0        # fastest and slowest round median (ms per batch)
    ms_max: float = 0.0
    rounds: int = 1

    @property
    def efficiency(self) -> float:
        """Measured speedup over the FLOP-ideal one (1.0: every FLOP saved is time saved)."""
        return self.measured_speedup / self.ideal_speedup

    @property
    def spread_pct(self) -> float:
        """(slowest - fastest round) / median, in percent."""
        return 100.0 * (self.ms_max - self.ms_min) / self.ms_per_batch

    @property
    def unstable(self) -> bool:
        """Rounds disagree by more than ``UNSTABLE_SPREAD_PCT``: read the row with care."""
        return self.spread_pct > UNSTABLE_SPREAD_PCT


UNSTABLE_SPREAD_PCT = 10.0


@dataclass(frozen=True)
class Timing:
    """Seconds per call over interleaved rounds: the median of the round medians, the fastest and slowest round
    median, and the largest peak memory growth (None if unknown)."""

    median: float
    low: float
    high: float
    peak: float | None
    rounds: int


def _peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def measure(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> tuple[float, float | None]:
    """Median seconds per call and peak memory growth in MB during the timed calls (None if unknown)."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        can_track = _peak_rss_reset()
        base = _rss_mb("VmRSS") if can_track else None
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    elif base is not None:
        peak = _rss_mb("VmHWM") - base
    return statistics.median(times), peak


def interleaved_medians(keys: Sequence[K], prepare: Callable[[K], Callable[[], object]], rounds: int = 3,
                        warmup: int = 3, iters: int = 10, device: str | torch.device = "cpu"
                        ) -> dict[K, Timing]:
    """Per key: the ``Timing`` of ``rounds`` rounds (each the median of ``iters`` timed calls).

    Every round times every key once, in turn (``prepare(key)`` returns the call to time, e.g. after switching a
    method on), so a cold start or a burst of load elsewhere hits all keys alike instead of whichever was timed
    then (measured: timing the base once, first, made every method look faster than its FLOP-ideal)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: expected at least 1")
    seconds: dict[K, list[float]] = {key: [] for key in keys}
    peaks: dict[K, list[float]] = {key: [] for key in keys}
    for _ in range(rounds):
        for key in keys:
            fn = prepare(key)
            with torch.inference_mode():
                took, peak = measure(fn, warmup, iters, torch.device(device))
            seconds[key].append(took)
            if peak is not None:
                peaks[key].append(peak)
    return {key: Timing(statistics.median(seconds[key]), min(seconds[key]), max(seconds[key]),
                        max(peaks[key]) if peaks[key] else None, rounds) for key in keys}


def random_text_guide(model, batch: int, device: torch.device, length: int = 16) -> torch.Tensor:
    """``model.text_guide`` of random token ids (ending in the end-of-text id where the model pools there)."""
    cfg = model.config.text
    length = min(length, cfg.max_length)
    ids = torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    if cfg.eot_token_id is not None:
        ids = ids.masked_fill(ids == cfg.eot_token_id, 0)
        ids[:, -1] = cfg.eot_token_id
    with torch.inference_mode():
        return model.text_guide(ids.to(device), torch.ones_like(ids).to(device))


def available_device(name: str) -> torch.device:
    """``name`` as a torch device, refused in one line when this torch build or machine does not have it."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name ({err}); e.g. cpu, cuda, cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: vlprune benchmarks run on cpu, cuda or mps")
    return device


def bench_image_tower(model, methods: Sequence[str], batch_sizes: Sequence[int] = (1, 32, 64), warmup: int = 3,
                      iters: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32,
                      rounds: int = 5, others: dict[str, object] | None = None) -> list[BenchRow]:
    """Benchmark ``encode_image`` for every method spec (``none`` first is the speedup reference), then for every
    model of ``others`` (label -> model, e.g. a structurally pruned copy; no method), against the same reference.
    Timed in ``rounds`` interleaved rounds (``interleaved_medians``)."""
    dev = available_device(device)
    if not batch_sizes or min(batch_sizes) < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"bench: batch_sizes={list(batch_sizes)}, iters={iters}, warmup={warmup}: expected "
                         "positive batch sizes, iters >= 1 and warmup >= 0")
    runs = [(label, model, config) for label, config in (parse_method(spec) for spec in methods)]
    runs += [(label, other, None) for label, other in (others or {}).items()]
    for _, net, _ in runs:
        net.to(dev, dtype).eval()
    base_gflops = model_gflops(model.config)["vision_gflops"]

    def prepare(key: tuple[int, int]) -> Callable[[], object]:
        m, batch = key
        _, net, config = runs[m]
        apply(net, config)
        vision = net.config.vision
        pixels = torch.randn(batch, vision.channels, vision.image_size, vision.image_size, device=dev, dtype=dtype)
        return partial(net.encode_image, pixels, guide=random_text_guide(net, batch, dev).to(dtype))

    timed = interleaved_medians([(m, b) for m in range(len(runs)) for b in batch_sizes], prepare, rounds, warmup,
                                iters, dev)
    rows: list[BenchRow] = []
    base_speed: dict[int, float] = {}
    for m, (label, net, config) in enumerate(runs):
        apply(net, config)
        gflops = vision_gflops(net)
        for batch in batch_sizes:
            timing = timed[(m, batch)]
            speed = batch / timing.median
            if config is None and net is model:
                base_speed[batch] = speed
            rows.append(BenchRow(net.config.name, label, json.dumps(config.to_dict() if config else {}),
                                 batch, speed, 1000 * timing.median, gflops, net.num_params("vision"), timing.peak,
                                 torch.get_num_threads(), dev.type, str(dtype).replace("torch.", ""),
                                 speed / base_speed[batch] if batch in base_speed else float("nan"),
                                 base_gflops / gflops, 1000 * timing.low, 1000 * timing.high, timing.rounds))
    apply(model, None)
    return rows


def speed_notes(rows: list[BenchRow]) -> list[str]:
    """What the table alone hides, derived from the rows: each method's fastest batch size, any method slower
    per image at a bigger batch than at a smaller one, and rows whose rounds disagree by more than 10%."""
    notes = []
    for method in dict.fromkeys(r.method for r in rows):
        own = sorted((r for r in rows if r.method == method), key=lambda r: r.batch)
        best = max(own, key=lambda r: r.images_per_s)
        notes.append(f"{method}: fastest per image at batch {best.batch} ({best.images_per_s:.1f} img/s)")
        slower = [(a, b) for a, b in zip(own, own[1:]) if b.images_per_s < a.images_per_s]
        notes += [f"{method}: slower per image at batch {b.batch} ({b.images_per_s:.1f} img/s) than at batch "
                  f"{a.batch} ({a.images_per_s:.1f} img/s)" for a, b in slower]
    notes += [f"{r.method} at batch {r.batch}: rounds spread {r.spread_pct:.0f}% (> {UNSTABLE_SPREAD_PCT:.0f}%): "
              "unstable, re-run on a quieter machine" for r in rows if r.unstable]
    return notes


def row_dict(row: BenchRow) -> dict:
    """A row with its derived columns (efficiency, spread, unstable) for CSV / JSON."""
    return {**asdict(row), "efficiency": row.efficiency, "spread_pct": row.spread_pct, "unstable": row.unstable}


def write_rows(rows: list[BenchRow], out: Path) -> None:
    """CSV (``.csv``) or JSON (anything else) with machine info."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row_dict(rows[0])))
            writer.writeheader()
            writer.writerows(row_dict(r) for r in rows)
    else:
        machine = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__}
        out.write_text(json.dumps({"machine": machine, "rows": [row_dict(r) for r in rows],
                                   "notes": speed_notes(rows)}, indent=2) + "\n")
