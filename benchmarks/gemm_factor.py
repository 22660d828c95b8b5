"""The physical GEMM factor of token reduction (issue 26): how much of a method's FLOP-ideal speedup plain
matrix multiplies of its shapes can deliver, with no selection, merging or Python in between.

For a method's token schedule (tokens entering attention and MLP of every layer, ``ReduceConfig.schedule``) this
times the image tower's matmuls alone — qkv, per-head scores and values, output projection, MLP up and down —
for the base schedule and the method's, at each batch size, in interleaved rounds (``interleaved_medians``).

    GEMM speedup = time(base matmuls) / time(method matmuls)
    GEMM factor  = GEMM speedup / FLOP-ideal speedup       (1.0: shorter sequences run as efficiently)

A method's measured speedup (``vlprune bench``) can reach at most about ideal x GEMM factor; what is missing
beyond that is overhead (selection, merging, dispatch). Writes docs/results/gemm-factor.{json,md}:

    .venv/bin/python benchmarks/gemm_factor.py --threads 2 --batch-sizes 1,16 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from vlprune.eval.bench import UNSTABLE_SPREAD_PCT, interleaved_medians
from vlprune.experiments.pages import table
from vlprune.method_registry import parse_settings, split_settings
from vlprune.models.flops import model_gflops
from vlprune.reduce.base import method_gflops
from vlprune.reduce.budget import at_budget
from vlprune.registry import model_config

ROOT = Path(__file__).resolve().parents[1]


def tower_matmuls(width: int, heads: int, head_dim: int, hidden: int, schedule: list[tuple[int, int]],
                  batch: int):
    """A call running every matmul of the tower's blocks at the schedule's sequence lengths."""
    inner = heads * head_dim
    w_qkv, w_o = torch.randn(width, 3 * inner), torch.randn(inner, width)
    w_up, w_down = torch.randn(width, hidden), torch.randn(hidden, width)
    inputs = [(torch.randn(batch, a, width), torch.randn(batch, heads, a, head_dim), torch.randn(batch, m, width))
              for a, m in schedule]

    def run() -> None:
        for x, q, y in inputs:
            x @ w_qkv
            scores = q @ q.transpose(-1, -2)
            scores @ q
            x @ w_o
            (y @ w_up) @ w_down

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit-b16-clip")
    parser.add_argument("--cut", type=float, default=0.3, help="fraction of image-tower GFLOPs each method removes")
    parser.add_argument("--methods", nargs="+", default=["tome", "evit", "elip:mode=cheap,lam=1.0", "trips", "random"],
                        help="NAME[:fixed settings]; the knob that sets the cost is solved to --cut")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = model_config(args.model)
    vision = config.vision
    if len(set(vision.num_heads)) != 1 or len(set(vision.intermediate_size)) != 1:
        raise SystemExit(f"{args.model}: this benchmark assumes uniform heads and MLP widths")
    base_gflops = model_gflops(config)["vision_gflops"]
    schedules = {"none": [(vision.num_patches + 1,) * 2] * vision.num_layers}
    ideal = {"none": 1.0}
    for spec in args.methods:
        name, _, rest = spec.partition(":")
        method = at_budget(name, config, args.cut, **parse_settings(split_settings(rest), spec))
        schedules[spec] = method.schedule(vision)
        ideal[spec] = base_gflops / method_gflops(config, method)["vision_gflops"]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    calls = {(label, batch): tower_matmuls(vision.width, vision.num_heads[0], vision.head_dim,
                                           vision.intermediate_size[0], schedule, batch)
             for label, schedule in schedules.items() for batch in batches}
    timed = interleaved_medians(list(calls), calls.__getitem__, args.rounds, warmup=2, iters=args.iters)
    rows = []
    for (label, batch), timing in timed.items():
        speedup = timed[("none", batch)].median / timing.median
        rows.append({"method": label, "batch": batch, "matmul ms": 1000 * timing.median,
                     "spread %": 100 * (timing.high - timing.low) / timing.median, "FLOP-ideal": ideal[label],
                     "GEMM speedup": speedup, "GEMM factor": speedup / ideal[label]})
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    payload = {"machine": machine, "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gemm-factor.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# Physical GEMM factor of token reduction", "",
             "Written by `benchmarks/gemm_factor.py` (raw values in `gemm-factor.json`); never edited by hand. "
             f"Machine: {machine}. Settings: {payload['settings']}.", "",
             f"Each method solved to a {args.cut:.0%} image-tower GFLOPs cut on {args.model}; only the tower's "
             "matmuls at its token schedule are timed (interleaved rounds, median of round medians). GEMM factor = "
             "GEMM speedup / FLOP-ideal: below 1, shorter sequences run less efficiently, and a method's measured "
             "speedup can reach at most about FLOP-ideal x GEMM factor.", "",
             *table(["method", "batch", "matmul ms", "spread %", "FLOP-ideal", "GEMM speedup", "GEMM factor"], rows),
             ""]
    unstable = [f"{r['method']} at batch {r['batch']}" for r in rows if r["spread %"] > UNSTABLE_SPREAD_PCT]
    if unstable:
        lines += [f"Rounds disagree by more than {UNSTABLE_SPREAD_PCT:.0f}% for {len(unstable)} of {len(rows)} rows "
                  f"({', '.join(unstable)}): those GEMM factors are not decided by this run; re-run on a quieter "
                  "machine or with more rounds.", ""]
    (args.out / "gemm-factor.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
