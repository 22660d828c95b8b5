"""``vlprune`` command line: train | eval | prune | info | bench | convert | report | demo.

User errors (bad values, missing files, checkpoints that do not fit) print one line ``vlprune: error: ...``
and exit with status 2; nothing prints a PyTorch traceback for a mistake the user can fix (set
``VLPRUNE_DEBUG=1`` to see the traceback anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from functools import partial
from pathlib import Path

import torch

from vlprune.config import ConfigError, read_json
from vlprune.data.images import ImageLoadError
from vlprune.data.pairs import PAIR_DATA_HELP
from vlprune.data.sources import DATA_HELP
from vlprune.method_registry import (
    describe_methods,
    list_methods,
    method_config,
    parse_method,
    parse_settings,
    split_settings,
)
from vlprune.models.io import MAX_PARAMS_ENV, CheckpointError, load, load_tokenizer, resolve
from vlprune.reduce import apply
from vlprune.registry import list_models
from vlprune.train.scene import SCENE_LOSSES
from vlprune.train.trainer import TrainingStopped

# OSError: a path that is a file where a directory is needed, a read-only disk, a missing file ...; its message
# names the path. TrainingStopped: a non-finite loss or a failed optimizer step, named with the step.
TRAIN_DATA, PRUNE_VAL_DATA = "toyworld:train", "toyworld:val"
USER_ERRORS = (ConfigError, CheckpointError, ImageLoadError, ValueError, KeyError, OSError, TrainingStopped)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``vlprune: error: ...`` (exit status 2) like every other error;
    ``--help`` shows the usage."""

    def error(self, message: str) -> None:
        self.exit(2, f"vlprune: error: {self.prog.removeprefix('vlprune ')}: {message}\n")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"vlprune: warning: {message}", file=file or sys.stderr)


def _out_dir(path: str, what: str) -> Path:
    """``--out`` of a command that writes a directory: refused when it names an existing file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {path} is a file; {what} is written into a directory there: choose another --out")
    return out


class MethodGroup(argparse.Action):
    """``--method NAME`` starts a method group; each later ``--set KEY=VALUE`` belongs to the latest group (so
    ``bench --method none --method tome --set r=4 --method evit`` keeps each method's settings apart). ``NAME`` may
    carry settings itself (``tome:r=4``); ``--set`` adds to them."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        groups = list(getattr(namespace, "method_groups", None) or [])
        if option_string == "--set":
            if not groups:
                raise argparse.ArgumentError(self, f"{value!r} comes before any --method; put --set after the "
                                             "--method it configures")
            groups[-1] = (groups[-1][0], [*groups[-1][1], value])
        else:
            groups.append((value, []))
        namespace.method_groups = groups


def method_specs(args: argparse.Namespace, default: str = "none") -> list[str]:
    """Each ``--method NAME --set k=v ...`` group as one ``NAME:k=v,...`` spec (``vlprune.reduce.parse_method``)."""
    groups = getattr(args, "method_groups", None) or [(default, [])]
    specs = []
    for name, settings in groups:
        joiner = "," if ":" in name else ":"
        specs.append(name + (joiner + ",".join(settings) if settings else ""))
    return specs


def _one_method(args: argparse.Namespace, default: str = "none") -> str:
    specs = method_specs(args, default)
    if len(specs) > 1:
        raise ValueError(f"--method given {len(specs)} times ({', '.join(specs)}); this command takes one")
    return specs[0]


def _add_method_args(p: argparse.ArgumentParser, default: str, help_text: str) -> None:
    """The one method dialect of every subcommand: ``--method NAME`` then ``--set KEY=VALUE`` (repeatable)."""
    p.add_argument("--method", action=MethodGroup, dest="method_groups", default=None, metavar="NAME",
                   help=f"{help_text} (default: {default})")
    p.add_argument("--set", action=MethodGroup, dest="method_groups", metavar="KEY=VALUE",
                   help="a value of the method's config (JSON), repeatable, after its --method, e.g. --set "
                        "keep_ratio=0.5 --set layers=[3,6]")


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _positive_ints(text: str, flag: str) -> list[int]:
    """``1,32,64`` -> [1, 32, 64]; anything else is one error naming the flag."""
    items = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() and int(t) > 0 for t in items):
        raise ValueError(f"{flag} {text!r}: expected positive whole numbers separated by commas, e.g. 1,32,64")
    return [int(t) for t in items]


def _tasks(spec: str) -> dict[str, float]:
    """``itc,itm:0.5,mlm`` -> {"itc": 1.0, "itm": 0.5, "mlm": 1.0}."""
    tasks = {}
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        try:
            tasks[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--tasks {spec!r}: weight {weight!r} of {name!r} is not a number") from None
        if not 0 < tasks[name.strip()] < float("inf"):
            raise ValueError(f"--tasks {spec!r}: weight {weight!r} of {name!r} must be a finite number > 0 (drop the "
                             "task rather than weighting it 0)")
    return tasks


def cmd_train(args: argparse.Namespace) -> int:
    from vlprune.distributed import rank
    from vlprune.train.recipe import train
    from vlprune.train.trainer import TrainConfig

    _out_dir(args.out, "the run (checkpoints, metrics.jsonl, model/)")
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_steps=args.warmup_steps, grad_accum=args.grad_accum, seed=args.seed,
                         ckpt_every=args.ckpt_every, log_every=args.log_every, amp=args.amp)
    method = _one_method(args)
    if method.partition(":")[0] == "smarttrim":
        final = _train_smarttrim(args, config, method)
        if rank() == 0:
            print(f"saved {final}")
        return 0
    init_parts = tuple(p for p in args.init_parts.split(",") if p) if args.init_parts else ()
    final = train(args.model, args.out, _tasks(args.tasks), config, data=args.data, train_size=args.train_size,
                  method=method, init_from=args.init_from, init_parts=init_parts, momentum_queue=args.momentum_queue,
                  momentum=args.momentum, twins=args.twins, scene_loss=args.scene_loss, until=args.until,
                  workers=args.workers)
    if rank() == 0:
        print(f"saved {final}")
    return 0


def _train_smarttrim(args: argparse.Namespace, config, method: str) -> Path:
    """``vlprune train --method smarttrim``: fine-tune a fusion model with SmartTrim on one task (vqa or itm)."""
    from vlprune.train.smarttrim import train_smarttrim

    tasks = _tasks(args.tasks)
    if args.data != TRAIN_DATA:
        raise ValueError(f"--data {args.data}: --method smarttrim fine-tunes on {TRAIN_DATA} only (--train-size "
                         "for fewer scenes); drop --data")
    if len(tasks) != 1 or next(iter(tasks)) not in ("vqa", "itm"):
        raise ValueError(f"--tasks {args.tasks!r}: SmartTrim fine-tunes on one task, vqa or itm")
    values = {name: getattr(args, name) for name in ("target_vision", "target_text", "target_heads")
              if getattr(args, name) is not None}
    values.update(parse_settings(split_settings(method.partition(":")[2]), "--set"))
    trim = method_config("smarttrim", ("adaptive",), **values)
    return train_smarttrim(args.model, args.out, trim, next(iter(tasks)), config, args.train_size,
                           workers=args.workers)


def cmd_eval(args: argparse.Namespace) -> int:
    from vlprune.eval.evaluate import evaluate
    from vlprune.eval.smarttrim import evaluate_trimmed
    from vlprune.trim.io import is_trimmed, load_trimmed

    torch.set_num_threads(args.threads) if args.threads else None
    method = _one_method(args)
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    if is_trimmed(args.model):
        if method != "none":
            raise ValueError(f"--method {method}: {args.model} is a SmartTrim checkpoint, whose trimmers already "
                             "choose the tokens and heads per input; drop --method (or give its base model)")
        result = evaluate_trimmed(load_trimmed(args.model), load_tokenizer(args.model), args.task, args.data,
                                  args.batch_size, args.rerank_k, name)
    else:
        model = load(args.model)
        apply(model, parse_method(method)[1])
        _say_if_costlier(model, method)
        result = evaluate(model, load_tokenizer(args.model), args.task, args.data, args.batch_size, args.rerank_k,
                          name, args.classnames, args.templates, args.truncate, _answers(args.model))
    result["threads"] = torch.get_num_threads()
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _say_if_costlier(model, method: str) -> None:
    """One warning line when the chosen method costs more vision GFLOPs than the base model (e.g. ELIP's faithful
    mode, whose guide pass outweighs what it prunes on a small tower), so nobody reads a slowdown as a saving."""
    from vlprune.reduce.base import method_gflops, vision_gflops

    base = method_gflops(model.config, None)["vision_gflops"]
    cost = vision_gflops(model)
    if cost > base:
        warnings.warn(f"--method {method} costs {cost:.4f} vision GFLOPs per image, more than the base model's "
                      f"{base:.4f}: its extra passes outweigh what it removes here (ELIP: --set mode=cheap)",
                      stacklevel=2)


def _answers(model: str) -> list[str] | None:
    """The VQA answer vocabulary saved beside a checkpoint (``answers.json``, a JSON list in head order), if any."""
    path = resolve(model) / "answers.json"
    if not path.is_file():
        return None
    answers = read_json(path, "VQA answer list", expected=list)
    if not all(isinstance(a, str) for a in answers):
        raise ValueError(f"{path} must hold a JSON list of answer strings, in the VQA head's order")
    return answers


def cmd_prune(args: argparse.Namespace) -> int:
    from vlprune.distributed import init_distributed, rank
    from vlprune.eval.evaluate import heldout_retrieval
    from vlprune.models.io import save
    from vlprune.structured.config import PruneConfig
    from vlprune.train.prune_recipe import run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    name, _, settings = _one_method(args, "mope").partition(":")
    if name not in list_methods(("structured",)):
        raise ValueError(f"--method {name!r}: vlprune prune ranks modules with one of "
                         f"{', '.join(list_methods(('structured',)))}")
    flags = dict(method=name, data=args.data, val_data=args.val_data, stage=args.stage, tower=args.tower,
                 target_params=args.target_params, keep_layers=args.keep_layers, groups=args.groups,
                 metric=args.metric, val_pairs=args.val_pairs, grad_pairs=args.grad_pairs,
                 distill_steps=args.distill_steps, distill_batch=args.distill_batch, lr=args.lr,
                 weights=(args.alpha, args.beta, args.gamma), fast=not args.naive, seed=args.seed)
    config = PruneConfig.from_dict({**flags, **parse_settings(split_settings(settings), "--set")})
    out = _out_dir(args.out, "the pruning run")
    if any(out.glob("distil-*")) or (out / "prune.json").exists():
        raise ValueError(f"--out {out} already holds a pruning run; choose a new --out directory")
    init_distributed("gloo")
    model, tokenizer = load(args.model), load_tokenizer(args.model)
    evaluate = heldout_retrieval(tokenizer, args.eval_pairs) if args.eval_pairs else None
    result = run_recipe(model, tokenizer, config, out, evaluate)
    if rank() == 0:
        save(result.model, out / "model", tokenizer)
        for i, table in enumerate(result.tables):
            table.save(out / "cost_tables" / f"{i}-{table.tower}-{table.info['step']}.json")
        (out / "prune.json").write_text(json.dumps({"config": config.to_dict(), "steps": result.steps}, indent=1)
                                        + "\n")
        last = result.steps[-1]
        print(f"saved {out / 'model'}: params {last['params']:,} (vision {last['vision_params']:,}, text "
              f"{last['text_params']:,}), vision GFLOPs {last['vision_gflops']:.4f}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vlprune.models.flops import model_gflops
    from vlprune.models.io import create_model

    if args.methods:
        print(describe_methods())
        return 0
    if args.model is None:
        raise ValueError("vlprune info: give a model (architecture name, bundled model or checkpoint directory) or "
                         "--methods")
    model = create_model(args.model) if args.model in list_models() and not _has_weights(args.model) \
        else load(args.model)
    cfg = model.config
    print(f"{cfg.name or args.model}: kind={cfg.kind} params={model.num_params():,} "
          f"(vision {model.num_params('vision'):,}, text {model.num_params('text'):,})")
    for key, value in model_gflops(cfg).items():
        print(f"  {key}: {value:.4f}")
    for tower, tcfg in (("vision", cfg.vision), ("text", cfg.text)):
        print(f"  {tower}: width {tcfg.width}, head_dim {tcfg.head_dim}, {tcfg.num_layers} layers")
        cross = getattr(tcfg, "cross_attention_layers", ())
        for i in range(tcfg.num_layers):
            extra = " +cross-attention" if i in cross else ""
            print(f"    layer {i} (orig {tcfg.layer_map[i]}): heads {tcfg.num_heads[i]}, "
                  f"mlp {tcfg.intermediate_size[i]}{extra}")
    return 0


def _has_weights(name: str) -> bool:
    try:
        resolve(name)
        return True
    except CheckpointError:
        return False


def cmd_bench(args: argparse.Namespace) -> int:
    from vlprune.eval.bench import bench_image_tower, speed_notes, write_rows
    from vlprune.models.io import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = _positive_ints(args.batch_sizes, "--batch-sizes")
    model = load(args.model) if _has_weights(args.model) else create_model(args.model)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    specs = (args.methods or []) + (method_specs(args) if getattr(args, "method_groups", None) else [])
    rows = bench_image_tower(model, specs or ["none"], batches, args.warmup, args.iters, args.device, dtype,
                             args.rounds)
    memory = "peak MB" if args.device.startswith("cuda") else "RSS+ MB"
    header = ("method", "batch", "img/s", "ms", "spread%", "GFLOPs", "speedup", "ideal", "effic.", memory)
    print(f"{header[0]:<28} " + " ".join(f"{h:>9}" for h in header[1:]))
    for r in rows:
        peak = f"{r.peak_mem_mb:8.1f}" if r.peak_mem_mb is not None else "       ?"
        flag = "!" if r.unstable else " "
        print(f"{r.method[:28]:<28} {r.batch:>9} {r.images_per_s:>9.1f} {r.ms_per_batch:>9.2f} "
              f"{r.spread_pct:>8.1f}{flag} {r.vision_gflops:>9.3f} {r.measured_speedup:>9.2f} {r.ideal_speedup:>9.2f} "
              f"{r.efficiency:>9.2f} {peak:>9}")
    print(f"threads={torch.get_num_threads()} device={args.device} dtype={args.dtype} rounds={args.rounds}: ms is "
          "the median of the round medians, spread% (slowest - fastest round) / median, ! above 10%; efficiency = "
          "speedup / FLOP-ideal")
    for note in speed_notes(rows):
        print(f"  {note}")
    if args.out:
        write_rows(rows, Path(args.out))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from vlprune.models.convert.directory import convert_directory

    out = _out_dir(args.out, "the converted checkpoint")
    fmt, model = convert_directory(args.src, out, args.to, args.open_clip_model, args.max_length)
    cfg = model.config
    print(f"converted {args.src} ({fmt}) -> {args.out} ({args.to}): kind={cfg.kind} params={model.num_params():,} "
          f"vision {cfg.vision.num_layers}x{cfg.vision.width} @ {cfg.vision.image_size}px, "
          f"text {cfg.text.num_layers}x{cfg.text.width}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vlprune.report.run_report import render_run

    print(f"wrote {render_run(Path(args.run_dir))}")  # a missing or foreign results.json is a user error
    return 0


def cmd_export_toyworld(args: argparse.Namespace) -> int:
    from vlprune.data.export import data_spec, export_toyworld

    out = export_toyworld(args.format, args.out, args.count, args.split, args.image_size, args.image_format,
                          args.shard_size)
    spec = data_spec(args.format, out, args.split)
    print(f"wrote {args.count} toy-world items to {out}; read them with --data {spec}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from vlprune.experiments.claims import claims, stale_claims, write_claims

    out = Path(args.out)
    if args.check:
        problems = stale_claims(out)
        for problem in problems:
            print(f"stale: {problem}")
        print(f"{len(problems)} stale" if problems else f"{out / 'claims.json'}: every claim matches the shipped "
              "weights and its spec")
        return 1 if problems else 0
    if args.only and args.only not in [c.id for c in claims()]:
        raise ValueError(f"--only {args.only!r}: no such claim; known: {', '.join(c.id for c in claims())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = write_claims(out, Path(args.store), args.only)
    for e in entries:
        print(f"{e['id']}: {e['verdict']}")
    print(f"wrote {out / 'claims.json'} and {out / 'claims.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vlprune.demo import run_demo

    run_demo(_out_dir(args.out, "the demo (results.json, report.html)"), count=args.count)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vlprune", description="Make vision-language models cheaper to train and run, and "
                           "measure it honestly.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--max-params", type=float, metavar="N",
                        help=f"refuse to build a model whose config adds up to more than N parameters (default: "
                             f"${MAX_PARAMS_ENV} or vlprune.models.io.DEFAULT_MAX_PARAMS), checked before anything "
                             "is allocated")
    sub = parser.add_subparsers(dest="command", required=True)
    add = partial(sub.add_parser, parents=[common])

    p = add("train", help="train a model on the toy world, a Karpathy split or webdataset shards (single process "
            "or under torchrun)")
    p.add_argument("--model", required=True, help=f"architecture ({', '.join(list_models())}) or checkpoint dir")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, model/)")
    p.add_argument("--data", default=TRAIN_DATA, help=f"the training pairs: {PAIR_DATA_HELP} (default: {TRAIN_DATA}). "
                   "karpathy: every caption is a pair with its image, split train unless given; wds: every sample "
                   "is a pair, split over ranks and --workers with none repeated in an epoch. Real captions are cut "
                   "to the model's text context; real data trains itc, itm and mlm (vqa, scene, ground, "
                   "ground_object and --twins need the toy world)")
    p.add_argument("--tasks", default="itc",
                   help="comma list of itc,itm,mlm,vqa,scene,ground,ground_object with optional :weight (scene: "
                        "the toy world's per-cell attribute supervision; ground / ground_object, with vqa: where the "
                        "question's object is and what it is; see vlprune.train.scene)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=_positive_int, default=64, help="global batch size (split over ranks)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes that render batches ahead (0: in the training process); on a GPU the "
                        "toy world's CPU rendering is the bottleneck without them; results do not depend on it")
    p.add_argument("--init-from", help="checkpoint (dir or bundled name) to initialise weights from")
    p.add_argument("--init-parts", default="", help="comma list of top-level parts to copy, e.g. visual,visual_proj")
    p.add_argument("--train-size", type=int, help="train on the first N pairs of --data (default: all)")
    p.add_argument("--twins", type=int, default=0, metavar="T",
                   help="put T hard-negative twins beside every scene (one attribute of one mentioned object "
                        "changed); a batch of B scenes then holds B(T+1) pairs")
    p.add_argument("--scene-loss", choices=SCENE_LOSSES, default="mean",
                   help="task scene: 'mean' averages over every cell and target entry (empty cells dominate; the "
                        "shipped toy models used it), 'balanced' = mean over occupied cells / positive entries plus "
                        "mean over the rest")
    p.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="stop after this step (and its checkpoint) on the schedule of --steps; run again with a "
                        "later --until or none to go on")
    p.add_argument("--momentum-queue", type=int, default=0,
                   help="ITC against a queue of this many momentum-encoder embeddings (ALBEF/MoCo; 0 = in-batch)")
    p.add_argument("--momentum", type=float, default=0.995, help="EMA factor of the momentum encoder")
    _add_method_args(p, "none", "train with token reduction on, e.g. --method elip --set keep=[0.9,0.6,0.3], "
                     "trips, tome --set r=4, evit; or smarttrim (adaptive token and head trimming; fine-tunes a fusion "
                     "model on --tasks vqa or itm; --set temperature=0.5 --set tokens=local)")
    for name, what in (("vision", "image tokens"), ("text", "text tokens"), ("heads", "attention heads")):
        p.add_argument(f"--target-{name}", type=float, help=f"smarttrim: keep-ratio target of {what}, in (0, 1]")
    p.set_defaults(func=cmd_train)

    p = add("eval", help="evaluate retrieval / zero-shot / VQA; writes CLIP_benchmark-style JSON")
    p.add_argument("--model", required=True, help="bundled model name or checkpoint directory (a SmartTrim "
                   "checkpoint is evaluated with its trimmers on: vqa or retrieval)")
    p.add_argument("--task", default="retrieval", choices=["retrieval", "zeroshot", "vqa"])
    p.add_argument("--data", default="toyworld:val:1000", help=f"the evaluation set: {DATA_HELP} (default: the "
                   "first 1,000 val pairs; the toy world's val and test splits hold 10,000)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--rerank-k", type=int, default=16, help="ITM re-ranking of the top-k (fusion models; 0 = off)")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: torch's choice)")
    _add_method_args(p, "none", f"token reduction: none, {', '.join(list_methods())}")
    p.add_argument("--truncate", action="store_true", help="cut captions / questions longer than the model's text "
                   "context, as CLIP_benchmark does (default: such a text is an error naming its length)")
    p.add_argument("--classnames", metavar="FILE", help="zero-shot on folder: data: class names in label order, one "
                   "per line (default: the sorted folder names)")
    p.add_argument("--templates", metavar="FILE", help="zero-shot prompt templates, one per line with {} for the "
                   "class (default: CLIP's ImageNet templates)")
    p.set_defaults(func=cmd_eval)

    p = add("prune", help="structured pruning (MoPE-CLIP): remove heads, FFN neuron groups and layers, "
                       "distil, save a smaller model", description="Score modules (heads, FFN neuron groups, layers) "
                       "with --method, remove the least important until the tower keeps --target-params of its "
                       "parameters, and distil from the unpruned model. --stage finetune: width, distil, then depth, "
                       "distil; --stage pretrain: width and depth at once, then distil. Writes OUT/model (a vlprune "
                       "checkpoint), OUT/prune.json (plans, sizes, metrics per step) and OUT/cost_tables/*.json. "
                       "Runs under torchrun too (MoPE modules and distillation batches are shared over ranks).")
    p.add_argument("--model", default="toy-clip", help="bundled model name or checkpoint directory (kind='clip')")
    p.add_argument("--out", required=True, help="output directory")
    _add_method_args(p, "mope", f"module ranking, one of {', '.join(list_methods(('structured',)))} "
                     "(every-other-layer prunes depth only); --set KEY=VALUE sets any PruneConfig field, over the "
                     "flags below")
    p.add_argument("--data", default=TRAIN_DATA, help=f"pairs for gradient scores, neuron rewiring and distillation: "
                   f"{PAIR_DATA_HELP} (karpathy split train unless given; default: {TRAIN_DATA})")
    p.add_argument("--val-data", default=PRUNE_VAL_DATA, help=f"retrieval set for MoPE's Z ({PAIR_DATA_HELP}): its "
                   f"first --val-pairs images with their first caption (karpathy split val unless given; default: "
                   f"{PRUNE_VAL_DATA})")
    p.add_argument("--stage", default="finetune", choices=["finetune", "pretrain"])
    p.add_argument("--tower", default="vision", choices=["vision", "text", "both"])
    p.add_argument("--target-params", type=float, default=0.5, help="fraction of each pruned tower's params to keep")
    p.add_argument("--keep-layers", type=float, help="fraction of layers the depth step keeps (default: 1.0 for "
                   "targets >= 0.5, else 0.75)")
    p.add_argument("--groups", type=int, default=8, help="FFN neuron groups per layer (MoPE's N)")
    p.add_argument("--metric", default="mean_recall", choices=["mean_recall", "tr", "ir"],
                   help="MoPE's Z on the val split: mean R@1,5,10 of both directions, image->text or text->image")
    p.add_argument("--val-pairs", type=int, default=200, help="--val-data pairs for MoPE's Z")
    p.add_argument("--grad-pairs", type=int, default=128, help="first --data pairs for gradient scores and neuron "
                   "rewiring")
    p.add_argument("--eval-pairs", type=int, default=0, help="test pairs to evaluate after each step (0 = off)")
    p.add_argument("--distill-steps", type=int, default=100, help="steps per distillation (0 = none)")
    p.add_argument("--distill-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=1.0, help="weight of L_sim")
    p.add_argument("--beta", type=float, default=1e3, help="weight of L_feat")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of L_hidn")
    p.add_argument("--naive", action="store_true", help="re-run both towers for every module (slow; for checking)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, help="torch threads")
    p.set_defaults(func=cmd_prune)

    p = add("info", help="params, per-layer shapes and GFLOPs of a model; --methods: every method and its fields")
    p.add_argument("model", nargs="?", help="architecture name, bundled model or checkpoint directory")
    p.add_argument("--methods", action="store_true", help="list every registered method (token, text-token, "
                   "adaptive, structured) with its config fields and defaults, from the configs themselves")
    p.set_defaults(func=cmd_info)

    p = add("bench", help="images/s, latency, peak memory and GFLOPs of the image tower per method")
    p.add_argument("--model", default="toy-clip",
                   help="bundled model, checkpoint dir, or architecture name (random weights)")
    _add_method_args(p, "none", "a method to time, repeatable, each with its own --set: --method none --method tome "
                     "--set r=4 --method evit --set keep_ratio=0.7 (the first is the speedup reference)")
    p.add_argument("--methods", nargs="+", help="shorthand for methods without --set, base first: none tome:r=4 "
                   "evit:layers=[3,6,9],keep_ratio=0.7 random")
    p.add_argument("--batch-sizes", default="1,32,64")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="interleaved rounds over the methods (each keeps the median of its round medians)")
    p.add_argument("--threads", type=_positive_int, help="torch threads (recorded in every row)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--out", help="write rows as .csv or .json")
    p.set_defaults(func=cmd_bench)

    p = add("convert", help="convert a checkpoint directory: transformers CLIP/BLIP, open_clip <-> vlprune",
                       description="Convert a checkpoint directory. The source format is recognised from its files: "
                       "transformers save_pretrained output (CLIPModel, BlipForImageTextRetrieval), open_clip's "
                       "local-dir layout (open_clip_config.json + open_clip_model.safetensors) or a vlprune "
                       "checkpoint. Weights are read and written as safetensors only. Structurally pruned models "
                       "export zero-padded to stock shapes (same outputs, no savings outside vlprune).")
    p.add_argument("src", help="source checkpoint directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--to", default="vlprune", choices=["vlprune", "hf", "open_clip"], help="output format")
    p.add_argument("--open-clip-model", help="open_clip model name whose tokenizer to use (default: open_clip's "
                   "SimpleTokenizer, the CLIP BPE)")
    p.add_argument("--max-length", type=int, help="tokenizer padding length (default: the model's, at most 77)")
    p.set_defaults(func=cmd_convert)

    p = add("report", help="write RUN_DIR/report.html from a demo run's results.json",
                       description="One self-contained HTML page (PNG plots embedded): the tables, accuracy vs "
                       "GFLOPs and accuracy vs images/s Pareto fronts, token-keep maps and samples.")
    p.add_argument("run_dir", help="a `vlprune demo --out` directory")
    p.set_defaults(func=cmd_report)

    p = add("export-toyworld", help="write the toy world in a real dataset format (karpathy, wds, vqa, folder)",
            description="Write toy-world items to disk as Karpathy JSON + images, webdataset tar shards, VQA v2 "
            "questions + annotations + images, or an ImageFolder tree, so every --data path can be tried offline. "
            "It prints the --data value that reads the export back.")
    p.add_argument("--format", required=True, choices=["karpathy", "wds", "vqa", "folder"])
    p.add_argument("--out", required=True, help="an empty or new directory")
    p.add_argument("--count", type=_positive_int, required=True, help="items to write (the first of the split)")
    p.add_argument("--split", default="val", help="toy-world split (folder: always the zeroshot split)")
    p.add_argument("--image-size", type=_positive_int, default=64)
    p.add_argument("--image-format", default="png", choices=["png", "jpg"], help="png is lossless")
    p.add_argument("--shard-size", type=_positive_int, default=100, help="wds: samples per tar shard")
    p.set_defaults(func=cmd_export_toyworld)

    p = add("results", help="decide the papers' claims on the shipped models: docs/results/claims.{json,md}",
            description="Run (or reuse) the evaluation runs every claim needs — each kept under a key of its spec "
            "and the weights' SHA-256 in --store, never recomputed — and write the claims file with paired "
            "bootstrap intervals and verdicts. --check lists claims whose recorded weights or spec no longer match "
            "and exits 1 when any are stale.")
    p.add_argument("--only", metavar="ID", help="decide this claim only (the others keep their recorded entries)")
    p.add_argument("--check", action="store_true", help="compute nothing; exit 1 if any claim is stale")
    p.add_argument("--out", default="docs/results", help="where claims.json and claims.md are written")
    p.add_argument("--store", default="runs/experiments", help="run records, one JSON per run key")
    p.add_argument("--threads", type=_positive_int, help="torch threads")
    p.set_defaults(func=cmd_results)

    p = add("demo", help="evaluate the bundled models on the toy world and write a report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--count", type=_positive_int, default=1000, help="validation pairs / questions per task")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    limit = os.environ.get(MAX_PARAMS_ENV)
    if args.max_params is not None:
        os.environ[MAX_PARAMS_ENV] = repr(args.max_params)
    show = warnings.showwarning
    if not os.environ.get("VLPRUNE_DEBUG"):
        warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("VLPRUNE_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"vlprune: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    finally:  # main() may run in a caller's process: leave its environment and warning display as they were
        warnings.showwarning = show
        if limit is None:
            os.environ.pop(MAX_PARAMS_ENV, None)
        else:
            os.environ[MAX_PARAMS_ENV] = limit


if __name__ == "__main__":
    sys.exit(main())
