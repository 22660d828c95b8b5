"""Fine-tune toy-fusion with SmartTrim at several targets, with its baselines and ablations, and write
docs/results/smarttrim.md + smarttrim.json + PNGs (every number there comes from this script).

    PYTHONPATH=src .venv/bin/python scripts/results_smarttrim.py            # defaults: ~20 min on 2 CPU cores

Runs are resumable (runs/smarttrim/<name>/); a finished run is loaded, not retrained. Delete the directory after
replacing the bundled model. All runs of one task fine-tune the same number of steps from the same checkpoint,
including the untrimmed control ("base-ft"), so differences are not fine-tuning time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import vlprune
from vlprune.config import ConfigError
from vlprune.data.pairs import Collate, ToyPairs, to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.smarttrim import (
    adaptivity,
    batch1_inputs,
    batch1_latency,
    retrieval_run,
    static_scorer,
    trim_scorer,
    vqa_run,
)
from vlprune.experiments.smarttrim_page import render
from vlprune.models.io import weights_sha256
from vlprune.reduce import EViTConfig, ToMeConfig, TRIPSConfig, apply
from vlprune.report.trim_maps import token_maps
from vlprune.train.smarttrim import train_smarttrim
from vlprune.train.trainer import TrainConfig
from vlprune.trim import SmartTrim, SmartTrimConfig
from vlprune.trim.flops import static_gflops
from vlprune.trim.io import load_trimmed
from vlprune.trim.michel import head_importance, select_heads

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-fusion")
    p.add_argument("--runs", default=str(ROOT / "runs" / "smarttrim"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--targets", default="0.7,0.8,0.9;0.5,0.7,0.8;0.3,0.6,0.7",
                   help="';'-separated vision,text,heads keep-ratio targets; the middle one is the baselines' target")
    p.add_argument("--steps", type=int, default=50, help="fine-tuning steps of every VQA run")
    p.add_argument("--itm-steps", type=int, default=30, help="fine-tuning steps of every ITM run (0: no retrieval)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--itm-batch-size", type=int, default=8, help="images per ITM batch (x3 pairs with negatives)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--trimmer-lr-scale", type=float, default=100.0)
    p.add_argument("--head-keep", type=float, default=0.6, help="head retention of the head-pruning comparison")
    p.add_argument("--eval-count", type=int, default=500, help="validation questions")
    p.add_argument("--retrieval-count", type=int, default=100, help="validation pairs for retrieval")
    p.add_argument("--rerank-k", type=int, default=4)
    p.add_argument("--latency-count", type=int, default=40, help="inputs timed at batch size 1")
    p.add_argument("--importance-batches", type=int, default=4, help="batches for gradient head importance")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def targets_of(spec: str) -> list[dict[str, float]]:
    out = []
    for part in spec.split(";"):
        v, t, h = (float(x) for x in part.split(","))
        out.append({"target_vision": v, "target_text": t, "target_heads": h})
    return out


class Runner:
    """Trains (or reloads) named runs and evaluates them."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tokenizer = vlprune.load_tokenizer(args.model)
        self.world = ToyWorld("val", image_size=vlprune.load(args.model).config.vision.image_size)
        self.training: dict[str, dict] = {}

    def train(self, name: str, config: SmartTrimConfig, task: str) -> SmartTrim:
        a = self.args
        steps, batch = (a.steps, a.batch_size) if task == "vqa" else (a.itm_steps, a.itm_batch_size)
        run = Path(a.runs) / name
        if not (run / "model" / "smarttrim.json").is_file():
            train_config = TrainConfig(steps=steps, batch_size=batch, lr=a.lr, warmup_steps=max(1, steps // 10),
                                       ckpt_every=steps, log_every=max(1, steps // 10))
            start = time.perf_counter()
            train_smarttrim(a.model, run, config, task, train_config, progress=False)
            print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        self.training[name] = {"task": task, "steps": lines[-1]["step"], "batch_size": batch,
                               "median_sec_per_step": float(np.median([x["sec_per_step"] for x in lines]))}
        return load_trimmed(run / "model")

    def vqa(self, trim: SmartTrim, mode: str = "masked") -> dict:
        return vqa_run(trim_scorer(trim, "vqa", mode), trim.model.config.vision, self.tokenizer, self.world,
                       self.args.eval_count)

    def vqa_static(self, model) -> dict:
        return vqa_run(static_scorer(model, "vqa"), model.config.vision, self.tokenizer, self.world,
                       self.args.eval_count)

    def retrieval(self, score, model) -> dict:
        return retrieval_run(score, model, self.tokenizer, self.world, self.args.retrieval_count, self.args.rerank_k)


def summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "per_instance"}


def keep_profile(trim: SmartTrim, runner: Runner) -> dict[str, float]:
    """Mean kept fraction per module on validation inputs (the Random baseline's rates)."""
    world, count = runner.world, min(128, runner.args.eval_count)
    ids, mask = runner.tokenizer([world.scene(i).question for i in range(count)])
    with torch.no_grad():
        record = trim(to_pixels([world.image(i) for i in range(count)], trim.model.config.vision), ids, mask).record
    return {name: float(record.ratio(name)) for name in record.keep}


def static_candidates(vision_layers: int) -> list:
    """Static token-reduction settings to match a GFLOPs budget with (EViT, ToMe, TRIPS on the image tower)."""
    ratios = [round(float(r), 3) for r in np.linspace(0.05, 1.0, 96)]
    return ([EViTConfig(keep_ratio=r) for r in ratios] + [TRIPSConfig(keep_ratio=r) for r in ratios]
            + [ToMeConfig(r=r) for r in range(0, 33)])


def matched_static(model, budget: float, lengths: torch.Tensor) -> list:
    """Per static method, the setting whose mean GFLOPs per pair is closest to ``budget``."""
    best: dict[str, tuple[float, object]] = {}
    for config in static_candidates(model.config.vision.num_layers):
        try:
            config.check(model.config.vision)
        except ConfigError:
            continue
        mean = float(static_gflops(model.config, config.schedule(model.config.vision), lengths).mean())
        if config.method not in best or abs(mean - budget) < best[config.method][0]:
            best[config.method] = (abs(mean - budget), config)
    return [config for _, config in best.values()]


def text_lengths(runner: Runner, texts: list[str]) -> torch.Tensor:
    return runner.tokenizer(texts)[1].sum(dim=1)


def vqa_section(runner: Runner, targets: list[dict]) -> tuple[dict, dict[str, SmartTrim]]:
    a = runner.args
    runs: dict[str, dict] = {}
    trims: dict[str, SmartTrim] = {}
    base = runner.train("vqa-base-ft", SmartTrimConfig(tokens="off", heads="off", lambda_sd=0.0), "vqa")
    runs["base-ft"] = summary(runner.vqa(base, "full"))
    base0 = SmartTrim(vlprune.load(a.model), SmartTrimConfig(tokens="off", heads="off"))
    runs["base (no fine-tuning)"] = summary(runner.vqa(base0, "full"))
    common = {"trimmer_lr_scale": a.trimmer_lr_scale}
    for i, target in enumerate(targets):
        trim = runner.train(f"vqa-smarttrim-{i}", SmartTrimConfig(**target, **common), "vqa")
        result = runner.vqa(trim)
        runs[f"smarttrim-{i}"] = {**summary(result), "targets": target,
                                  "adaptivity": adaptivity(result["per_instance"])}
        trims[f"smarttrim-{i}"] = trim
    middle = targets[len(targets) // 2]
    reference = trims[f"smarttrim-{len(targets) // 2}"]
    variants = {"local": {"tokens": "local"}, "no-curriculum": {"curriculum": 0.0}, "no-self-distillation":
                {"lambda_sd": 0.0},
                "random": {"tokens": "random", "heads": "random", "keep_profile": keep_profile(reference, runner)}}
    for name, change in variants.items():
        trim = runner.train(f"vqa-{name}", SmartTrimConfig(**{**middle, **common, **change}), "vqa")
        runs[name] = {**summary(runner.vqa(trim)), "targets": middle, "variant": change if name != "random" else
                      {"tokens": "random", "heads": "random", "keep_profile": "measured on smarttrim (middle target)"}}
    heads = heads_section(runner, base, common)
    lengths = text_lengths(runner, [runner.world.scene(i).question for i in range(a.eval_count)])
    static = []
    model = base.model
    for i in range(len(targets)):
        budget = runs[f"smarttrim-{i}"]["gflops"]["mean"]
        for config in matched_static(model, budget, lengths):
            apply(model, config)
            static.append({"matched_to": f"smarttrim-{i}", "method": config.method, "config": config.to_dict(),
                           **summary(runner.vqa_static(model))})
            apply(model, None)
    return {"runs": runs, "heads": heads, "static": static}, {"base-ft": base, **trims}


def heads_section(runner: Runner, base: SmartTrim, common: dict) -> dict:
    """Head trimming only (tokens untouched), at one retention: SmartTrim's learned head trimmers against
    Random heads and gradient importance (Michel et al.) kept per layer and over the whole model."""
    a = runner.args
    keep = a.head_keep
    dataset = ToyPairs(ToyWorld("train", image_size=base.model.config.vision.image_size))
    collate = Collate(runner.tokenizer, base.model.config.vision)
    pretrained = SmartTrim(vlprune.load(a.model), SmartTrimConfig(tokens="off", heads="off"))
    batches = [collate([dataset[i] for i in range(b * a.batch_size, (b + 1) * a.batch_size)])
               for b in range(a.importance_batches)]
    importance = head_importance(pretrained, "vqa", batches, torch.Generator().manual_seed(0))
    configs = {"smarttrim-heads": {"heads": "learned"}, "random-heads": {"heads": "random"},
               **{f"grad-{scope}": {"heads": "fixed", "fixed_heads": select_heads(importance, keep, scope)}
                  for scope in ("layer", "model")}}
    out = {}
    for name, change in configs.items():
        config = SmartTrimConfig(tokens="off", target_heads=keep, **common, **change,
                                 lambda_sd=0.0)  # as the paper's head comparison: no self-distillation
        out[name] = summary(runner.vqa(runner.train(f"vqa-{name}", config, "vqa")))
    return {"keep": keep, "runs": out}


def retrieval_section(runner: Runner, targets: list[dict]) -> tuple[dict, dict[str, SmartTrim]]:
    runs, trims = {}, {}
    base = runner.train("itm-base-ft", SmartTrimConfig(tokens="off", heads="off", lambda_sd=0.0), "itm")
    runs["base-ft"] = runner.retrieval(trim_scorer(base, "itm", "full"), base.model)
    for i, target in enumerate(targets):
        trim = runner.train(f"itm-smarttrim-{i}", SmartTrimConfig(**target, trimmer_lr_scale=runner.args.
                                                                  trimmer_lr_scale), "itm")
        runs[f"smarttrim-{i}"] = {**runner.retrieval(trim_scorer(trim, "itm"), trim.model), "targets": target}
        trims[f"smarttrim-{i}"] = trim
    lengths = text_lengths(runner, [runner.world.scene(i).caption for i in range(runner.args.retrieval_count)])
    static = []
    for i in range(len(targets)):
        for config in matched_static(base.model, runs[f"smarttrim-{i}"]["gflops"]["mean"], lengths):
            apply(base.model, config)
            static.append({"matched_to": f"smarttrim-{i}", "method": config.method, "config": config.to_dict(),
                           **runner.retrieval(static_scorer(base.model, "itm"), base.model)})
            apply(base.model, None)
    return {"runs": runs, "static": static}, trims


def latency_section(runner: Runner, trims: dict[str, SmartTrim]) -> dict:
    """Batch-1 CPU latency of the untrimmed fine-tuned model and each SmartTrim target (hard masks, tokens and
    heads physically removed), on the same inputs, text unpadded for all; beside the FLOP-ideal speedup."""
    count, world = runner.args.latency_count, runner.world
    vision = trims["base-ft"].model.config.vision
    inputs = batch1_inputs(runner.tokenizer, world, vision, count)
    runs = {name: (lambda i, t=trim, mode="full" if name == "base-ft" else "hard": t(*inputs[i], mode))
            for name, trim in trims.items()}
    with torch.inference_mode():
        ms = batch1_latency(runs, count)
        flops = {}
        for name, trim in trims.items():
            score = trim_scorer(trim, "vqa", "full" if name == "base-ft" else "masked")
            flops[name] = float(np.mean([score(*inputs[i])[1][0] for i in range(count)]))
    return {"threads": torch.get_num_threads(), "inputs": count,
            "rows": {name: {"ms": ms[name], "gflops": flops[name], "measured_speedup": ms["base-ft"] / ms[name],
                            "ideal_speedup": flops["base-ft"] / flops[name]} for name in trims}}


def overhead_section(trim: SmartTrim, runner: Runner) -> dict:
    world = runner.world
    ids, mask = runner.tokenizer([world.scene(i).question for i in range(32)])
    with torch.no_grad():
        record = trim(to_pixels([world.image(i) for i in range(32)], trim.model.config.vision), ids, mask).record
    return {"trimmer_params": trim.trimmer_params(), "model_params": trim.model.num_params(),
            "trimmer_gflops_mean": float(trim.trimmer_macs(record).mean()) * 2 / 1e9}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runner = Runner(args)
    targets = targets_of(args.targets)
    vqa, trims = vqa_section(runner, targets)
    retrieval = retrieval_section(runner, targets)[0] if args.itm_steps else None
    latency = latency_section(runner, trims)
    out = Path(args.out)
    middle = f"smarttrim-{len(targets) // 2}"
    maps = token_maps(trims[middle], runner.tokenizer, runner.world, [0, 1, 2, 3], out / "smarttrim_tokens.png")
    payload = {"settings": vars(args), "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
               "model": args.model, "model_sha256": {args.model: weights_sha256(args.model)},
               "training": runner.training, "vqa": vqa, "retrieval": retrieval,
               "latency": latency, "overhead": overhead_section(trims[middle], runner),
               "token_maps": str(maps.relative_to(out.parent.parent)) if maps.is_relative_to(out.parent.parent)
               else str(maps), "seconds": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "smarttrim.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "smarttrim.md").write_text(render(payload))
    print(f"wrote {out / 'smarttrim.md'} in {payload['seconds']:.0f} s")


if __name__ == "__main__":
    main()
