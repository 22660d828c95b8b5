"""MoPE-CLIP on the bundled toy-clip: MoPE vs magnitude vs Taylor vs every-other-layer vs random at several
budgets of the vision tower (and the text tower), before and after distillation, with params, GFLOPs and
measured throughput; plus the fast-MoPE speedup. Writes docs/results/mope.md and docs/results/mope.json — every
number in them comes from this script. Re-run after retraining toy-clip:

    OMP_NUM_THREADS=2 .venv/bin/python scripts/results_mope.py          # defaults: about 15 min on 2 CPU cores

Data: MoPE's Z on the toy world's ``val`` split, gradient scores and distillation on ``train``, every reported
number on ``test`` (held apart from both).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import vlprune
from vlprune.eval.bench import interleaved_medians
from vlprune.eval.evaluate import heldout_retrieval
from vlprune.models.io import weights_sha256
from vlprune.structured.config import PruneConfig
from vlprune.train.prune_recipe import run_recipe, sizes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from mope_speed import speed_rows  # noqa: E402

METHODS = ("mope", "magnitude", "taylor", "every-other-layer", "random")
PRIMARY = {"vision": "text_retrieval_recall@1", "text": "image_retrieval_recall@1"}  # TR@1 / IR@1 (paper)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-clip")
    parser.add_argument("--stage", default="finetune", choices=["finetune", "pretrain"])
    parser.add_argument("--vision-budgets", default="0.5,0.25", help="fractions of vision-tower params to keep")
    parser.add_argument("--text-budgets", default="0.5", help="fractions of text-tower params to keep")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--val-pairs", type=int, default=200, help="val pairs for MoPE's Z")
    parser.add_argument("--test-pairs", type=int, default=500, help="test pairs for every reported recall")
    parser.add_argument("--grad-pairs", type=int, default=128)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--distill-steps", type=int, default=30, help="steps per distillation")
    parser.add_argument("--distill-batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="distillation LR (toy-clip was trained at 1e-3)")
    parser.add_argument("--speed-pairs", type=int, default=50, help="toy-clip pairs for the fast-MoPE benchmark")
    parser.add_argument("--speed-modules", type=int, default=12)
    parser.add_argument("--wide-pairs", type=int, default=8, help="pairs for the width-768 benchmark model")
    parser.add_argument("--wide-modules", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"))
    return parser.parse_args()


def _tower_call(model, tower: str, batch: int):
    if tower == "vision":
        v = model.config.vision
        return partial(model.encode_image, torch.randn(batch, v.channels, v.image_size, v.image_size))
    ids = torch.randint(4, model.config.text.vocab_size, (batch, model.config.text.max_length))
    ids[:, -1] = model.config.text.eot_token_id or 0
    return partial(model.encode_text, ids)


def throughputs(models: dict[str, object], tower: str, batch: int = 32, rounds: int = 3) -> dict[str, float]:
    """Images/s (vision) or texts/s (text) of each model's tower at ``batch``, timed in interleaved rounds
    (``vlprune.eval.bench.interleaved_medians``: median of 5 calls per round, median over rounds)."""
    calls = {label: _tower_call(model, tower, batch) for label, model in models.items()}
    timed = interleaved_medians(list(calls), calls.__getitem__, rounds, warmup=1, iters=5)
    return {label: batch / timing.median for label, timing in timed.items()}


def one_run(model, tokenizer, args, tower: str, budget: float, method: str, cache: dict) -> tuple[dict, object]:
    cfg = PruneConfig(method=method, stage=args.stage, tower=tower, target_params=budget, groups=args.groups,
                      val_pairs=args.val_pairs, grad_pairs=args.grad_pairs, distill_steps=args.distill_steps,
                      distill_batch=args.distill_batch, lr=args.lr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_recipe(model, tokenizer, cfg, tmp, heldout_retrieval(tokenizer, args.test_pairs),
                            progress=False, cache=cache)
    pruned = [s for s in result.steps if s["step"] in ("width", "depth")]
    return {"tower": tower, "budget": budget, "method": method, "config": cfg.to_dict(), "steps": result.steps,
            "before_distil": pruned[-1]["eval"] if pruned else None, "after_distil": result.steps[-1].get("eval"),
            "seconds": time.perf_counter() - start, "tables": [t.to_dict() for t in result.tables],
            **sizes(result.model)}, result.model


def verdicts(runs: list[dict], pairs: int) -> list[dict]:
    """Per (tower, budget): does MoPE have the best primary R@1 after distillation (and before)?"""
    out = []
    for tower, budget in dict.fromkeys((r["tower"], r["budget"]) for r in runs):
        group = {r["method"]: r for r in runs if (r["tower"], r["budget"]) == (tower, budget)}
        if "mope" not in group or len(group) < 2:
            continue
        entry = {"tower": tower, "budget": budget, "metric": PRIMARY[tower]}
        for when in ("before_distil", "after_distil"):
            scores = {m: r[when][PRIMARY[tower]] for m, r in group.items() if r[when]}
            best_other = max(v for m, v in scores.items() if m != "mope")
            noise = 2 * math.sqrt(max(scores["mope"] * (1 - scores["mope"]), 1e-9) / pairs)
            entry[when] = {"scores": scores, "mope_best": scores["mope"] >= best_other,
                           "margin": scores["mope"] - best_other, "two_se": noise}
        out.append(entry)
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = vlprune.load(args.model), vlprune.load_tokenizer(args.model)
    base = {**sizes(model), "eval": heldout_retrieval(tokenizer, args.test_pairs)(model), "throughput": {}}
    runs, cache, pruned = [], {}, []
    plan = [("vision", float(b)) for b in args.vision_budgets.split(",") if b] + \
           [("text", float(b)) for b in args.text_budgets.split(",") if b]
    for tower, budget in plan:
        for method in args.methods.split(","):
            r, pruned_model = one_run(model, tokenizer, args, tower, budget, method, cache)
            runs.append(r)
            pruned.append(pruned_model)
            print(f"{tower} {budget} {method}: {PRIMARY[tower]} {r['before_distil'][PRIMARY[tower]]:.3f} -> "
                  f"{r['after_distil'][PRIMARY[tower]]:.3f} ({r['seconds']:.0f}s)", flush=True)
    for tower in ("vision", "text"):  # all models of a tower timed in the same interleaved rounds
        indices = [i for i, r in enumerate(runs) if r["tower"] == tower]
        measured = throughputs({"base": model, **{f"run {i}": pruned[i] for i in indices}}, tower)
        base["throughput"][tower] = measured["base"]
        for i in indices:
            runs[i]["throughput"] = measured[f"run {i}"]
    speed = speed_rows(args.model, args.speed_pairs, args.speed_modules, args.wide_pairs, args.wide_modules,
                       args.groups)
    machine = {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine()}
    payload = {"machine": machine, "args": vars(args), "model_sha256": {args.model: weights_sha256(args.model)},
               "base": base, "runs": runs,
               "verdicts": verdicts(runs, args.test_pairs), "fast_mope": speed}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mope.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "mope.md").write_text(render(payload))
    print((out / "mope.md").read_text())


# -- rendering ------------------------------------------------------------------------------------------

def _recalls(metrics: dict | None) -> str:
    if not metrics:
        return "– | –"
    return f"{metrics['text_retrieval_recall@1']:.3f} | {metrics['image_retrieval_recall@1']:.3f}"


def _shape(run: dict, tower: str) -> str:
    shape = run["shapes"][tower]
    return f"{len(shape['layer_map'])} layers, {sum(shape['num_heads'])} heads, {sum(shape['intermediate_size'])} FFN"


def render(p: dict) -> str:
    a, base = p["args"], p["base"]
    lines = ["# MoPE-CLIP structured pruning on toy-clip", "",
             "Written by `scripts/results_mope.py` (numbers are never typed by hand); raw values in `mope.json`.", "",
             f"Model `{a['model']}`; stage `{a['stage']}` (width → distil → depth → distil; the depth step only runs "
             "when width alone does not meet the budget: below 50 % it keeps 75 % of the layers). "
             f"MoPE's Z: mean recall on the first {a['val_pairs']} **val** pairs; gradient scores / rewiring on "
             f"{a['grad_pairs']} train pairs; distillation {a['distill_steps']} steps × batch {a['distill_batch']} "
             f"(lr {a['lr']}) on train, per distillation; every recall below on the first {a['test_pairs']} **test** "
             f"pairs. {p['machine']['threads']} CPU threads, torch {p['machine']['torch']}.", "",
             f"Base model: TR@1 {base['eval']['text_retrieval_recall@1']:.3f}, IR@1 "
             f"{base['eval']['image_retrieval_recall@1']:.3f}; vision {base['vision_params']:,} params, "
             f"{base['vision_gflops']:.3f} GFLOPs/image, {base['throughput']['vision']:.0f} images/s; text "
             f"{base['text_params']:,} params, {base['text_gflops']:.3f} GFLOPs/text, "
             f"{base['throughput']['text']:.0f} texts/s (batch 32; every model of a tower, the base included, timed "
             "in the same 3 interleaved rounds, median).", ""]
    for tower in ("vision", "text"):
        runs = [r for r in p["runs"] if r["tower"] == tower]
        if not runs:
            continue
        unit = "images/s" if tower == "vision" else "texts/s"
        lines += [f"## Pruning the {tower} tower", "",
                  f"| budget | method | {tower} params | {tower} GFLOPs | {unit} | measured × base | "
                  "FLOP-ideal × base | shape | TR@1 before | IR@1 before | TR@1 after | IR@1 after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            measured = r["throughput"] / base["throughput"][tower]
            ideal = base[tower + "_gflops"] / r[tower + "_gflops"]
            lines.append(f"| {r['budget']:.2f} | {r['method']} | {r[tower + '_params']:,} | "
                         f"{r[tower + '_gflops']:.3f} | {r['throughput']:.0f} | {measured:.2f} | {ideal:.2f} | "
                         f"{_shape(r, tower)} | "
                         f"{_recalls(r['before_distil'])} | {_recalls(r['after_distil'])} |")
        lines += ["", "*before*: right after the last pruning step (for a two-step run: after the width distillation "
                  "and the depth pruning); *after*: after the last distillation.", ""]
    lines += ["## Does \"MoPE wins at every budget\" reproduce?", ""]
    for v in p["verdicts"]:
        for when in ("before_distil", "after_distil"):
            e = v[when]
            word = ("within noise" if abs(e["margin"]) <= e["two_se"] else "yes, beyond noise") if e["mope_best"] \
                else ("no, within noise" if abs(e["margin"]) <= e["two_se"] else "no")
            lines.append(f"- {v['tower']} tower at {v['budget']:.2f}, {when.replace('_', ' ')} ({v['metric']}): "
                         f"**{word}** — MoPE {e['scores']['mope']:.3f}, best other "
                         f"{e['scores']['mope'] - e['margin']:.3f} (margin {e['margin']:+.3f}; two standard errors "
                         f"≈ {e['two_se']:.3f}, so margins below that are noise).")
    everywhere = all(v[w]["mope_best"] for v in p["verdicts"] for w in ("before_distil", "after_distil"))
    lines += ["", f"Overall: MoPE is {'' if everywhere else 'not '}best at every budget here."
              + ("" if everywhere else " See the rows above for where it is not."), ""]
    lines += ["## Fast MoPE", "",
              "Same modules scored both ways (spread evenly over the layers, cycling head / neuron group / layer): "
              "naive = both towers re-run from the input for every module; fast = the other tower's embeddings and the "
              "hidden states entering layer l cached, only layers ≥ l re-run.", "",
              "| model | tower | layers | modules | pairs | naive s | fast s | speedup | scores equal |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in p["fast_mope"]:
        lines.append(f"| {row['model']} (width {row['vision_width']}) | {row['tower']} | {row['layers']} | "
                     f"{row['modules']} | {row['pairs']} | {row['naive_seconds']:.1f} | {row['fast_seconds']:.1f} | "
                     f"{row['speedup']:.2f}× | {row['equal']} |")
    lines += ["", "The vision tower saves the text pass and on average half of its own layers (≈2×); the text tower "
              "saves the whole vision pass, which dominates the cost. `tests/test_structured_importance.py` checks "
              "fast == naive exactly, also with the modules sharded over two `torchrun` ranks.", "",
              "Reproduce: `OMP_NUM_THREADS=2 .venv/bin/python scripts/results_mope.py` (flags: `--help`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # re-write mope.md from mope.json without measuring again
        source = Path(sys.argv[2])
        source.with_suffix(".md").write_text(render(json.loads(source.read_text())))
    else:
        main()
