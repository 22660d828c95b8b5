"""Token-reduction tables (ELIP, TRIPS, EViT, ToMe, random) on the bundled models, written to
docs/results/token-reduction.md + .json. Every number in them comes from one run of this script:

    .venv/bin/python scripts/results_token_reduction.py            # ~30-40 min on 2 CPU cores
    .venv/bin/python scripts/results_token_reduction.py --quick    # small counts, to check the pipeline

Sections: inference at matched vision-GFLOPs cuts (training-free), speed from one benchmark run per architecture,
training cost and memory (ELIP's pre-training setting), a short training run with each method on (evaluated
unpruned, as ELIP's protocol, and with the method, as a fine-tune), and the papers' claims beside our numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch

import vlprune
from vlprune.data.pairs import Collate, ToyPairs
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.bench import bench_image_tower
from vlprune.eval.evaluate import evaluate
from vlprune.eval.train_cost import training_step_cost
from vlprune.models.io import weights_sha256
from vlprune.reduce import ELIPConfig, ReduceConfig
from vlprune.reduce.budget import MATCHABLE, VARIANTS, at_budget, vision_gflops_of
from vlprune.registry import model_config
from vlprune.train.objectives import Objective
from vlprune.train.recipe import train
from vlprune.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

TRAIN_METHODS: dict[str, Callable[[vlprune.ModelConfig], ReduceConfig | None]] = {
    "base": lambda cfg: None,
    "ELIP (paper: faithful, keep 0.9/0.65/0.4, λ=0.8)": lambda cfg: ELIPConfig(),
    "EViT @ELIP's cost": lambda cfg: at_budget("evit", cfg, _elip_training_cut(cfg)),
    "ToMe @ELIP's cost": lambda cfg: at_budget("tome", cfg, _elip_training_cut(cfg)),
    "random @ELIP's cost": lambda cfg: at_budget("random", cfg, _elip_training_cut(cfg)),
    "TRIPS @ELIP's cost": lambda cfg: at_budget("trips", cfg, _elip_training_cut(cfg)),
}


def _training_methods(arch: str, runs: Path, prefix: str) -> Iterator[tuple[str, ReduceConfig | None, Path, str]]:
    """(label, method config, run directory, method spec) of every ``TRAIN_METHODS`` entry on ``arch``."""
    for label, make in TRAIN_METHODS.items():
        config = make(model_config(arch))
        yield label, config, runs / (prefix + label.split(" ")[0].lower()), _spec(config)


def _spec(config: ReduceConfig | None) -> str:
    """The ``--method`` string of a method config (``none`` for the base)."""
    return config.spec() if config is not None else "none"


def _elip_training_cut(cfg: vlprune.ModelConfig) -> float:
    """The vision-GFLOPs cut of ELIP's schedule in the gradient-carrying pass (its no-grad pass aside)."""
    return 1 - vision_gflops_of(ELIPConfig(mode="cheap"), cfg) / vision_gflops_of(None, cfg)


def _knob(config: ReduceConfig | None) -> str:
    return "—" if config is None else MATCHABLE[config.method](config)


def _evaluate(model, tokenizer, task: str, count: int, rerank_k: int = 0) -> dict:
    result = evaluate(model, tokenizer, task, f"toyworld:val:{count}", rerank_k=rerank_k)
    return {"metrics": result["metrics"], "costs": {k: v for k, v in result["costs"].items() if k != "token_schedule"},
            "seconds": result["seconds"]}


def _score(task: str, metrics: dict) -> dict[str, float]:
    if task == "vqa":
        return {"vqa_accuracy": metrics["vqa_accuracy"]}
    return {"IR@1": metrics["image_retrieval_recall@1"], "TR@1": metrics["text_retrieval_recall@1"]}


def _settings(config: vlprune.ModelConfig, cuts: list[float]) -> list[tuple[str, float, ReduceConfig | None]]:
    """(label, cut, method config): the base, then every inference variant solved to every cut."""
    return [("base", 0.0, None)] + [(label, cut, make(config, cut)) for cut in cuts for label, make in VARIANTS.items()]


def inference_table(args) -> list[dict]:
    """Every variant at every cut, training-free, on toy-clip retrieval, toy-fusion VQA and ITM-reranked retrieval."""
    jobs = [("toy-clip", "retrieval", args.count, args.guided_k), ("toy-fusion", "vqa", args.vqa_count, 0),
            ("toy-fusion", "retrieval", args.count, args.guided_k)]
    rows = []
    for name, task, count, k in jobs:
        model, tokenizer = vlprune.load(name), vlprune.load_tokenizer(name)
        settings = _settings(model.config, args.cuts)
        for label, cut, config in settings:
            vlprune.apply(model, config)
            result = _evaluate(model, tokenizer, task, count, k)
            rows.append({"model": name, "task": task + (f" (re-rank top-{k})" if k and
                                                         (name == "toy-fusion" or (config and config.text_guided))
                                                         else ""),
                         "method": label, "target_cut": cut, "knob": _knob(config),
                         "vision_gflops": result["costs"]["vision_gflops"], **_score(task, result["metrics"]),
                         "config": config.to_dict() if config else None, "seconds": result["seconds"]})
            print(f"[inference] {name} {task} {label} cut={cut}: {_score(task, result['metrics'])}", flush=True)
        vlprune.apply(model, None)
    return rows


def ablation_table(args) -> list[dict]:
    """ELIP at the middle cut: λ sweep and prune-only (no merged token), on toy-fusion VQA and toy-clip retrieval."""
    cut = sorted(args.cuts)[len(args.cuts) // 2]
    rows = []
    for name, task, count in (("toy-fusion", "vqa", args.vqa_count), ("toy-clip", "retrieval", args.count)):
        model, tokenizer = vlprune.load(name), vlprune.load_tokenizer(name)
        base = at_budget("elip", model.config, cut, mode="cheap")
        variants = [(f"λ={lam}", ELIPConfig(**{**asdict(base), "lam": lam})) for lam in args.lams]
        variants.append(("λ=0.8, prune-only (no merged token)", ELIPConfig(**{**asdict(base), "merge": False})))
        for label, config in variants:
            vlprune.apply(model, config)
            result = _evaluate(model, tokenizer, task, count, args.guided_k if config.text_guided else 0)
            rows.append({"model": name, "task": task, "variant": label, "knob": _knob(config),
                         "vision_gflops": result["costs"]["vision_gflops"], **_score(task, result["metrics"])})
            print(f"[ablation] {name} {task} {label}: {_score(task, result['metrics'])}", flush=True)
        vlprune.apply(model, None)
    return rows


def text_prune_table(args) -> list[dict]:
    """ELIP's text-token ablation (section 4.3.1): 40 % of each caption's tokens dropped from the second half of the
    text encoder, Random / Post / Learned (image-guided), training-free on toy-clip retrieval and toy-fusion VQA."""
    from vlprune.data.toyworld import ToyWorld
    from vlprune.reduce.text_tokens import TextPruneConfig, apply_text_pruning, text_schedule

    world, rows = ToyWorld("val"), []
    for name, task, count in (("toy-clip", "retrieval", args.count), ("toy-fusion", "vqa", args.vqa_count)):
        model, tokenizer = vlprune.load(name), vlprune.load_tokenizer(name)
        texts = [world.scene(i).question if task == "vqa" else world.scene(i).caption for i in range(count)]
        lengths = tokenizer(texts)[1].sum(dim=1).tolist()
        strategies = ["random", "post"] + (["learned"] if name == "toy-fusion" else [])
        for strategy in [None, *strategies]:
            config = TextPruneConfig(strategy=strategy, seed=0) if strategy else None
            apply_text_pruning(model, config)
            result = _evaluate(model, tokenizer, task, count)
            kept = sum(sum(text_schedule(config, model.config.text, n)) for n in lengths)
            full = sum(n * model.config.text.unimodal_layers for n in lengths)
            rows.append({"model": name, "task": task, "strategy": strategy or "none (base)",
                         "text token-layers kept": kept / full, **_score(task, result["metrics"])})
            print(f"[text-prune] {name} {task} {strategy}: {_score(task, result['metrics'])}", flush=True)
        apply_text_pruning(model, None)
    return rows


def speed_table(args) -> list[dict]:
    """One benchmark run per architecture: every variant at every cut against the base in the same process."""
    rows = []
    for arch, batches, iters, cuts in (("toy-clip", (1, 32, 64), args.bench_iters, args.cuts),
                                       ("vit-b16-clip", tuple(args.vitb_batches), args.vitb_iters, args.vitb_cuts)):
        model = vlprune.load(arch) if arch == "toy-clip" else vlprune.create_model(arch)
        specs = ["none"] + [make(model.config, cut).spec() for cut in cuts for make in VARIANTS.values()]
        labels = ["base"] + [f"{label} @{cut:.0%}" for cut in cuts for label in VARIANTS]
        bench = bench_image_tower(model, specs, batch_sizes=batches, warmup=args.bench_warmup, iters=iters)
        for row in bench:
            rows.append({**asdict(row), "label": labels[specs.index(row.method)], "arch": arch})
        print(f"[speed] {arch}: {len(bench)} rows", flush=True)
    return rows


def training_cost_table(args) -> list[dict]:
    """ELIP's pre-training setting on both architectures: per method, analytic training GFLOPs per pair, measured
    step time and peak memory at the same batch; for ELIP also the largest batch within the base's memory."""
    rows = []
    for arch, tasks in (("toy-clip", {"itc": 1.0}), ("toy-fusion", {"itc": 1.0, "itm": 1.0, "mlm": 1.0})):
        model, tokenizer = vlprune.load(arch), vlprune.load_tokenizer(arch)
        pairs = ToyPairs(ToyWorld("train", image_size=model.config.vision.image_size))
        collate = Collate(tokenizer, model.config.vision)
        batch = collate([pairs[i] for i in range(args.train_batch)])
        base_cost = None
        for label, make in TRAIN_METHODS.items():
            config = make(model.config)
            cost = training_step_cost(model, config, batch, Objective(tasks), warmup=1, iters=args.train_iters)
            base_cost = cost if config is None else base_cost
            rows.append({"arch": arch, "method": label, "knob": _knob(config), "tasks": ",".join(tasks),
                         "batch": args.train_batch, **cost,
                         "ideal_speedup": base_cost["train_gflops_per_pair"] / cost["train_gflops_per_pair"],
                         "measured_speedup": base_cost["sec_per_step"] / cost["sec_per_step"]})
            print(f"[train-cost] {arch} {label}: {cost}", flush=True)
        budget = base_cost["activation_mb"]
        fits = args.train_batch
        for size in range(args.train_batch + 16, 4 * args.train_batch + 1, 16):
            bigger = collate([pairs[i] for i in range(size)])
            cost = training_step_cost(model, ELIPConfig(), bigger, Objective(tasks), warmup=1, iters=1)
            if cost["activation_mb"] > budget:
                break
            fits = size
        rows.append({"arch": arch, "method": "ELIP+ (largest batch within the base's activation memory)",
                     "knob": "batch search in steps of 16", "tasks": ",".join(tasks), "batch": fits,
                     "activation_mb": budget})
    return rows


def short_training_table(args) -> list[dict]:
    """Continue training toy-clip (ITC, twins) for the same number of steps with each method on, then evaluate
    unpruned (ELIP's protocol: pruning is a training accelerator) and with the method on (a fine-tune)."""
    rows = []
    for label, config, out, spec in _training_methods("toy-clip", args.runs, ""):
        started = time.perf_counter()
        schedule = TrainConfig(steps=args.train_steps, batch_size=64 // (args.twins + 1), lr=2e-4,
                               warmup_steps=min(10, args.train_steps), ckpt_every=args.train_steps, log_every=10)
        final = train("toy-clip", out, {"itc": 1.0}, schedule, init_from="toy-clip", method=spec, twins=args.twins)
        seconds = time.perf_counter() - started
        model, tokenizer = vlprune.load(final), vlprune.load_tokenizer("toy-clip")
        unpruned = _evaluate(model, tokenizer, "retrieval", args.count)
        row = {"method": label, "knob": _knob(config), "steps": args.train_steps, "train_seconds": seconds,
               **{f"unpruned {k}": v for k, v in _score("retrieval", unpruned["metrics"]).items()}}
        if config is not None:
            inference = config if config.method != "elip" else ELIPConfig(**{**asdict(config), "mode": "cheap"})
            vlprune.apply(model, inference)
            pruned = _evaluate(model, tokenizer, "retrieval", args.count, args.guided_k)
            row.update({f"with method {k}": v for k, v in _score("retrieval", pruned["metrics"]).items()})
            row["with method vision_gflops"] = pruned["costs"]["vision_gflops"]
        rows.append(row)
        print(f"[short-train] {label}: {row}", flush=True)
    return rows


FINETUNE_JOBS = {  # model -> (tasks, batch of scenes, twins per scene, evaluations: (task, count attr, re-rank?))
    "toy-clip": ({"itc": 1.0}, 8, 7, (("retrieval", "count", True),)),
    "toy-fusion": ({"vqa": 1.0, "itc": 0.5, "itm": 0.5}, 32, 0, (("vqa", "vqa_count", False),
                                                               ("retrieval", "count", True))),
}
"""The inference table's evaluations after a short fine-tune: toy-clip on ITC with twins (as the short-train
section), toy-fusion on VQA with ITC and ITM kept on (as the bundled chain's stage 3), so the ITM re-ranking is
fine-tuned with the method too."""


def finetune_table(args) -> list[dict]:
    """The inference table's methods at ``--finetune-cuts`` after a short fine-tune of the bundled model with the
    method on (base: the same fine-tune without one), evaluated with the method on."""
    rows = []
    for name, (tasks, scenes, twins, evaluations) in FINETUNE_JOBS.items():
        settings = _settings(model_config(name), args.finetune_cuts)
        schedule = TrainConfig(steps=args.finetune_steps, batch_size=scenes, lr=2e-4,
                               warmup_steps=min(10, args.finetune_steps), ckpt_every=args.finetune_steps, log_every=10)
        for label, cut, config in settings:
            out = args.runs / f"finetune-{name}-{label.split(' (')[0].replace(' ', '-').replace('=', '')}-{cut:.2f}"
            final = train(name, out, tasks, schedule, init_from=name, method=_spec(config), twins=twins)
            model, tokenizer = vlprune.load(final), vlprune.load_tokenizer(name)
            vlprune.apply(model, config)
            for task, count, rerank in evaluations:
                k = args.guided_k if rerank and (name == "toy-fusion" or (config and config.text_guided)) else 0
                result = _evaluate(model, tokenizer, task, getattr(args, count), k)
                rows.append({"model": name, "task": task + (f" (re-rank top-{k})" if k else ""), "method": label,
                             "target_cut": cut, "knob": _knob(config), "steps": args.finetune_steps,
                             "vision_gflops": result["costs"]["vision_gflops"], **_score(task, result["metrics"])})
                print(f"[finetune] {name} {task} {label} cut={cut}: {_score(task, result['metrics'])}", flush=True)
    return rows


def clip_pretrain_table(args) -> list[dict]:
    """ELIP's setting on the dual encoder, from scratch: pre-train toy-clip (ITC; the paired caption guides the
    text-guided methods) for the same number of steps with each method on, then fine-tune with the method off and
    evaluate unpruned. TRIPS, as published, keeps its selection on in fine-tuning and inference: its row also has
    that run."""
    rows = []
    for label, config, out, spec in _training_methods("toy-clip", args.runs, "clip-"):
        pretrain = TrainConfig(steps=args.clip_pretrain_steps, batch_size=args.clip_batch, lr=1e-3,
                               warmup_steps=min(50, args.clip_pretrain_steps), ckpt_every=args.clip_pretrain_steps,
                               log_every=10)
        pretrained = train("toy-clip", out / "pretrain", {"itc": 1.0}, pretrain, method=spec)
        finetune = replace(pretrain, steps=args.clip_finetune_steps, lr=2e-4,
                           warmup_steps=min(10, args.clip_finetune_steps), ckpt_every=args.clip_finetune_steps)
        final = train(str(pretrained), out / "finetune", {"itc": 1.0}, finetune)
        tokenizer = vlprune.load_tokenizer(final)
        unpruned = _evaluate(vlprune.load(final), tokenizer, "retrieval", args.clip_count)
        row = {"method": label, "knob": _knob(config), "pretrain steps": args.clip_pretrain_steps,
               "fine-tune steps": args.clip_finetune_steps, "batch": args.clip_batch,
               **{f"unpruned {k}": v for k, v in _score("retrieval", unpruned["metrics"]).items()}}
        if config is not None and config.method == "trips":
            kept_on = train(str(pretrained), out / "finetune-with-method", {"itc": 1.0}, finetune, method=spec)
            model = vlprune.load(kept_on)
            vlprune.apply(model, config)
            pruned = _evaluate(model, tokenizer, "retrieval", args.clip_count, args.guided_k)
            row.update({f"with method {k}": v for k, v in _score("retrieval", pruned["metrics"]).items()})
        rows.append(row)
        print(f"[clip-pretrain] {label}: {row}", flush=True)
    return rows


def fusion_pretrain_table(args) -> list[dict]:
    """ELIP's setting on the fusion architecture: pre-train toy-fusion (ITC + ITM + MLM; image tower from toy-clip,
    text and fusion layers fresh, as the bundled chain's stage 2) for the same number of steps with each method
    on, then fine-tune on VQA with the method off and evaluate unpruned (pruning as a pre-training accelerator)."""
    rows = []
    for label, config, out, spec in _training_methods("toy-fusion", args.runs, "fusion-"):
        pretrain = TrainConfig(steps=args.fusion_steps, batch_size=32, lr=1e-3, warmup_steps=min(20, args.fusion_steps),
                               ckpt_every=args.fusion_steps, log_every=10)
        started = time.perf_counter()
        pretrained = train("toy-fusion", out / "pretrain", {"itc": 1.0, "itm": 1.0, "mlm": 1.0}, pretrain,
                           init_from="toy-clip", init_parts=("visual", "visual_proj"), method=spec)
        pretrain_seconds = time.perf_counter() - started
        finetune = replace(pretrain, lr=5e-4)
        final = train(str(pretrained), out / "vqa", {"vqa": 1.0}, finetune)
        model, tokenizer = vlprune.load(final), vlprune.load_tokenizer(final)
        vqa = _evaluate(model, tokenizer, "vqa", args.vqa_count)
        row = {"method": label, "knob": _knob(config), "pretrain steps": args.fusion_steps,
               "VQA steps": args.fusion_steps, "pretrain_seconds": pretrain_seconds,
               **{f"unpruned {k}": v for k, v in _score("vqa", vqa["metrics"]).items()}}
        rows.append(row)
        print(f"[fusion-pretrain] {label}: {row}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, help="validation pairs for retrieval")
    parser.add_argument("--vqa-count", type=int, default=1000, help="validation questions for VQA")
    parser.add_argument("--guided-k", type=int, default=4, help="top-k re-scored in retrieval (ITM / guided)")
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.15, 0.30, 0.45])
    parser.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.5, 0.8, 1.0])
    parser.add_argument("--bench-warmup", type=int, default=2)
    parser.add_argument("--bench-iters", type=int, default=7)
    parser.add_argument("--vitb-batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--vitb-iters", type=int, default=3)
    parser.add_argument("--vitb-cuts", type=float, nargs="+", default=[0.30], help="cuts benchmarked at ViT-B/16 size")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--train-iters", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=60, help="steps of the short training run per method")
    parser.add_argument("--twins", type=int, default=7, help="hard-negative twins per scene in the short training")
    parser.add_argument("--fusion-steps", type=int, default=200,
                        help="pre-training steps, then as many VQA steps, per method in the fusion-pretrain section")
    parser.add_argument("--finetune-steps", type=int, default=40,
                        help="steps of the short fine-tune with each method on in the finetune section")
    parser.add_argument("--finetune-cuts", type=float, nargs="+", default=[0.30],
                        help="cuts of the finetune section (every inference variant at each)")
    parser.add_argument("--clip-pretrain-steps", type=int, default=300,
                        help="from-scratch toy-clip pre-training steps per method in the clip-pretrain section")
    parser.add_argument("--clip-finetune-steps", type=int, default=100,
                        help="unpruned fine-tuning steps after each clip-pretrain run")
    parser.add_argument("--clip-batch", type=int, default=64, help="batch of the clip-pretrain section")
    parser.add_argument("--clip-count", type=int, default=1000, help="validation pairs of the clip-pretrain section")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sections", nargs="+", default=["inference", "ablation", "text-prune", "speed",
                                                          "train-cost", "short-train", "finetune",
                                                          "fusion-pretrain", "clip-pretrain"])
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the pipeline, numbers mean little")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "token-reduction",
                        help="training runs of the short-train section (resumed if present)")
    args = parser.parse_args()
    if args.quick:
        args.count, args.vqa_count, args.bench_iters, args.vitb_iters, args.train_steps = 40, 40, 1, 1, 2
        args.bench_warmup, args.train_iters, args.vitb_batches, args.train_batch = 0, 1, [1, 2], 8
        args.fusion_steps, args.clip_pretrain_steps, args.clip_finetune_steps, args.clip_batch = 2, 2, 2, 8
        args.clip_count, args.finetune_steps = 40, 2
    torch.set_num_threads(args.threads)
    sections = {"inference": inference_table, "ablation": ablation_table, "text-prune": text_prune_table,
                "speed": speed_table,
                "train-cost": training_cost_table, "short-train": short_training_table,
                "finetune": finetune_table,
                "fusion-pretrain": fusion_pretrain_table, "clip-pretrain": clip_pretrain_table}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "token-reduction.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "python": platform.python_version()}
    payload["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    payload["model_sha256"] = {name: weights_sha256(name) for name in ("toy-clip", "toy-fusion")}
    for name in args.sections:
        payload[name] = sections[name](args)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    from vlprune.experiments.token_reduction_page import render

    (args.out / "token-reduction.md").write_text(render(payload))
    print(f"wrote {path} and {args.out / 'token-reduction.md'}")


if __name__ == "__main__":
    main()
