"""Markdown for docs/results/token-reduction.md from the JSON that results_token_reduction.py writes.
Re-render without re-measuring:
    .venv/bin/python -m vlprune.experiments.token_reduction_page docs/results/token-reduction.json"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from vlprune.experiments.pages import table


def _verdict(diffs: list[float], margins: list[float]) -> str:
    """Per cut: a win or loss only beyond two standard errors of the difference; else a tie."""
    wins = sum(d > m for d, m in zip(diffs, margins))
    losses = sum(d < -m for d, m in zip(diffs, margins))
    if wins == len(diffs):
        return "reproduced"
    if losses and not wins:
        return "not reproduced (worse)"
    if not wins and not losses:
        return "within noise (no difference beyond 2 SE)"
    return f"mixed ({wins} better, {losses} worse, {len(diffs) - wins - losses} within noise)"


def _margin(a: float, b: float, n: int) -> float:
    """Two standard errors of the difference of two accuracies measured on ``n`` items each."""
    return 2 * math.sqrt(max(a * (1 - a) + b * (1 - b), 1e-12) / n)


def _versus(a: float, b: float, n: int) -> str:
    """'a vs b (difference ± 2 SE) → verdict' for one pair of accuracies on ``n`` items each."""
    margin = _margin(a, b, n)
    return f"{a:.3f} vs {b:.3f} ({a - b:+.3f} ± {margin:.3f}) → **{_verdict([a - b], [margin])}**"


def _compare(rows: list[dict], model: str, task_prefix: str, metric: str, better: str, worse: str,
             n: int, tag: str = "") -> list[str]:
    """Per cut: ``better`` minus ``worse`` on ``metric``, judged against 2 SE on ``n`` items; ``tag`` names the
    setting (training-free when empty)."""
    picked = [r for r in rows if r["model"] == model and r["task"].startswith(task_prefix) and metric in r]
    out, diffs, margins = [], [], []
    for cut in sorted({r["target_cut"] for r in picked if r["target_cut"] > 0}):
        a = next((r for r in picked if r["method"] == better and r["target_cut"] == cut), None)
        b = next((r for r in picked if r["method"] == worse and r["target_cut"] == cut), None)
        if a is None or b is None:
            continue
        diffs.append(a[metric] - b[metric])
        margins.append(_margin(a[metric], b[metric], n))
        out.append(f"{cut:.0%}: {a[metric]:.3f} vs {b[metric]:.3f} ({diffs[-1]:+.3f} ± {margins[-1]:.3f})")
    if not diffs:
        return []
    return [f"- {model} {task_prefix} {metric}{tag}: {better} vs {worse} — " + "; ".join(out)
            + f" → **{_verdict(diffs, margins)}**"]


def _pretraining_claims(payload: dict) -> list[str]:
    """ELIP's claim that pre-training with pruning keeps the downstream accuracy of the unpruned model: each method's
    pre-trained, unpruned score against the base's (a tie within 2 SE is what the claim predicts)."""
    settings = payload.get("settings", {})
    lines = []
    for section, what, metrics, n in (
            ("clip-pretrain", "toy-clip pre-trained from scratch", ("unpruned IR@1", "unpruned TR@1"),
             settings.get("clip_count", 1000)),
            ("fusion-pretrain", "toy-fusion pre-trained", ("unpruned vqa_accuracy",), settings.get("vqa_count", 1000))):
        rows = payload.get(section, [])
        base = next((r for r in rows if r["method"] == "base"), None)
        for row in (r for r in rows if base is not None and r is not base):
            parts = [f"{m.removeprefix('unpruned ')} {_versus(row[m], base[m], n)}" for m in metrics]
            lines.append(f"- {what} with {row['method']} vs base, downstream unpruned (ELIP: no loss): "
                         + "; ".join(parts))
    return lines


def claims(payload: dict) -> list[str]:
    settings = payload.get("settings", {})
    pairs_n, vqa_n = settings.get("count", 1000), settings.get("vqa_count", 1000)
    lines = []
    pairs = [("ELIP λ=0.8 (text-guided)", "ELIP λ=1 (vision only)"), ("TRIPS (text-guided)", "EViT"),
             ("ELIP λ=0.8 (text-guided)", "ToMe"), ("ELIP λ=0.8 (text-guided)", "EViT"),
             ("EViT", "random"), ("ToMe", "random")]
    settings_rows = ((payload.get("inference", []), ""),
                     (payload.get("finetune", []), ", after a fine-tune with the method on"))
    for rows, tag in settings_rows:
        for better, worse in pairs:
            lines += _compare(rows, "toy-fusion", "vqa", "vqa_accuracy", better, worse, vqa_n, tag)
            for metric in ("IR@1", "TR@1"):
                lines += _compare(rows, "toy-clip", "retrieval", metric, better, worse, pairs_n, tag)
    ablation = payload.get("ablation", [])
    for model, metric in (("toy-fusion", "vqa_accuracy"), ("toy-clip", "IR@1")):
        merged = next((r for r in ablation if r["model"] == model and r["variant"] == "λ=0.8"), None)
        pruned = next((r for r in ablation if r["model"] == model and "prune-only" in r["variant"]), None)
        if merged and pruned:
            n = vqa_n if metric == "vqa_accuracy" else pairs_n
            lines.append(f"- {model} {metric}: ELIP merge vs prune-only at the same keep — "
                         + _versus(merged[metric], pruned[metric], n))
    text_rows = payload.get("text-prune", [])
    for model, metric in (("toy-fusion", "vqa_accuracy"), ("toy-clip", "IR@1")):
        by = {r["strategy"]: r for r in text_rows if r["model"] == model}
        n = vqa_n if metric == "vqa_accuracy" else pairs_n
        for better in ("post", "learned"):
            if better in by and "random" in by:
                lines.append(f"- {model} {metric}: text pruning {better} vs random (ELIP: random is worst) — "
                             + _versus(by[better][metric], by["random"][metric], n))
    lines += _pretraining_claims(payload)
    speed = [r for r in payload.get("speed", []) if r["arch"] == "vit-b16-clip" and r["batch"] == 32
             and r["method"] != "none"]
    if speed:
        met = sum(r["measured_speedup"] >= 0.9 * r["ideal_speedup"] for r in speed)
        lines.append(f"- Speed target (ViT-B/16 size, batch 32, CPU): measured ≥ 0.9 × FLOP-ideal speedup in {met} of "
                     f"{len(speed)} method settings (table above).")
    return lines


def _per_task_tables(rows: list[dict], suffix: str) -> list[str]:
    """One table per (model, task) of inference-style rows: toy-clip retrieval, toy-fusion VQA and retrieval."""
    lines = []
    for model, task in (("toy-clip", "retrieval"), ("toy-fusion", "vqa"), ("toy-fusion", "retrieval")):
        picked = [r for r in rows if r["model"] == model and r["task"].startswith(task)]
        if picked:
            metrics = ["vqa_accuracy"] if task == "vqa" else ["IR@1", "TR@1"]
            lines += [f"### {model} {picked[-1]['task']}{suffix}", "",
                      *table(["method", "target_cut", "knob", "vision_gflops", *metrics], picked), ""]
    return lines


def render(payload: dict) -> str:
    machine = payload.get("machine", {})
    lines = ["# Token reduction: measured", "",
             "Written by `scripts/results_token_reduction.py` (raw values in `token-reduction.json`); never edited by "
             "hand. GFLOPs: analytic counter, 2 × multiply-accumulates, attention matmuls included, extra passes "
             "included (`vlprune.models.flops`). Retrieval on toyworld val, VQA on toyworld val.", "",
             f"Machine: {machine}. Settings: {payload.get('settings', {})}.", ""]
    if payload.get("inference"):
        lines += ["## Inference at matched vision-GFLOPs cuts (training-free)", "",
                  "Each method's knob is solved (`vlprune.reduce.budget.at_budget`) so its image-tower GFLOPs are "
                  "closest to the cut; the reached GFLOPs are in the table. ELIP runs in its cheap mode (its faithful "
                  "mode costs more than the base at inference). Text-guided methods cannot embed an image before they "
                  "see the text, so their retrieval is two-stage: the unguided base ranks, the top-k of each query are "
                  "re-encoded with the query as guide (k image encodes per query on top of the base ranking).", ""]
        lines += _per_task_tables(payload["inference"], "")
    if payload.get("ablation"):
        lines += ["## ELIP ablations at the middle cut (λ sweep, prune-only)", "",
                  *table(["model", "task", "variant", "knob", "vision_gflops", "vqa_accuracy", "IR@1", "TR@1"],
                          payload["ablation"]), ""]
    if payload.get("text-prune"):
        lines += ["## ELIP text-token pruning ablation (40 % of caption tokens, second half of the text encoder)", "",
                  "ELIP section 4.3.1 / Table 4, training-free here (the paper pre-trains with it). Random: tokens "
                  "drawn uniformly; Post: the trailing tokens go first (the paper's \"prioritized pruning the post "
                  "tokens\"); Learned: tokens ranked by similarity to the paired image's embedding, so it needs the "
                  "image first and runs on toy-fusion VQA only. The first and the pooled token always stay. "
                  "`text token-layers kept`: tokens entering the unimodal text layers over the texts evaluated, "
                  "relative to the unpruned captions (padding excluded) — the text compute that remains.", "",
                  *table(["model", "task", "strategy", "text token-layers kept", "vqa_accuracy", "IR@1", "TR@1"],
                          payload["text-prune"]), ""]
    if payload.get("speed"):
        lines += ["## Speed (one `bench_image_tower` run per architecture, base in the same process)", "",
                  "Text-guided methods get a random unit guide; the text tower is not timed.", "",
                  *table(["arch", "label", "batch", "images_per_s", "ms_per_batch", "vision_gflops",
                           "measured_speedup", "ideal_speedup", "peak_mem_mb", "threads", "device"],
                          payload["speed"]), ""]
    if payload.get("train-cost"):
        lines += ["## Training cost (ELIP's pre-training setting): one forward+backward step", "",
                  "Training GFLOPs per pair = 3 × the gradient-carrying forward + 1 × no-grad passes (ELIP's guide "
                  "pass). Activation memory: tensors autograd saves for the backward pass (each storage once; "
                  "`vlprune.eval.train_cost.saved_activation_mb`) — what token reduction shrinks; weights, gradients "
                  "and optimizer state are the same for every method.", "",
                  *table(["arch", "method", "knob", "tasks", "batch", "train_gflops_per_pair", "sec_per_step",
                           "pairs_per_s", "activation_mb", "ideal_speedup", "measured_speedup"],
                          payload["train-cost"]), ""]
    if payload.get("short-train"):
        steps = payload["short-train"][0]["steps"]
        lines += [f"## Short training with each method on ({steps} steps from toy-clip, ITC with twins)", "",
                  "ELIP's protocol evaluates the trained model unpruned; the same runs evaluated with the method on "
                  "are the fine-tune-with-the-method rows. Short runs: differences of a point or two are within noise.",
                  "", *table(["method", "knob", "steps", "train_seconds", "unpruned IR@1", "unpruned TR@1",
                               "with method IR@1", "with method TR@1", "with method vision_gflops"],
                              payload["short-train"]), ""]
    if payload.get("finetune"):
        steps = payload["finetune"][0]["steps"]
        lines += [f"## After a short fine-tune with the method on ({steps} steps from the bundled model)", "",
                  "The inference table's methods, each fine-tuned with the method on and evaluated with it on; base: "
                  "the same fine-tune without a method. toy-clip: ITC with twins (as the short-train section); "
                  "toy-fusion: VQA with ITC and ITM kept on (as the bundled chain's stage 3), so the ITM re-ranking is "
                  "fine-tuned with the method too. Compare each row with the training-free row of the same method and "
                  "cut above.", "", *_per_task_tables(payload["finetune"], ", fine-tuned")]
    if payload.get("fusion-pretrain"):
        steps = payload["fusion-pretrain"][0]["pretrain steps"]
        lines += [f"## Pre-training toy-fusion with each method on ({steps} ITC+ITM+MLM steps, then {steps} VQA steps "
                  "unpruned)", "",
                  "ELIP's setting on the fusion architecture: the image tower starts from toy-clip's, text and fusion "
                  "layers fresh; the method is on during pre-training only, and the VQA model is fine-tuned and "
                  "evaluated unpruned. Training GFLOPs, step time and memory of each method: the training-cost table "
                  "above. Short runs: read differences against the ± of the claims section.", "",
                  *table(["method", "knob", "pretrain steps", "VQA steps", "pretrain_seconds",
                           "unpruned vqa_accuracy"], payload["fusion-pretrain"]), ""]
    if payload.get("clip-pretrain"):
        first = payload["clip-pretrain"][0]
        cost = {r["method"]: r for r in payload.get("train-cost", []) if r["arch"] == "toy-clip"}
        rows = [{**r, **{k: cost.get(r["method"], {}).get(k) for k in ("train_gflops_per_pair", "activation_mb")}}
                for r in payload["clip-pretrain"]]
        lines += [f"## Pre-training toy-clip from scratch with each method on ({first['pretrain steps']} ITC steps, "
                  f"then {first['fine-tune steps']} ITC steps unpruned)", "",
                  "ELIP's own protocol on the dual encoder: random initialisation, the method on during pre-training "
                  "only (the paired caption guides ELIP and TRIPS), the downstream model fine-tuned and evaluated "
                  "unpruned. TRIPS as published keeps its selection on in fine-tuning and inference: the `with "
                  "method` columns. Training GFLOPs per pair and activation memory (at that table's batch) are from "
                  "the training-cost table above, where step time is measured with every method in one process (the "
                  "runs here shared the machine with other jobs, so their wall time is not a fair clock). Read "
                  "differences against 2 SE (about ± 0.02 at these recalls on 1,000 pairs).", "",
                  *table(["method", "knob", "pretrain steps", "fine-tune steps", "batch", "train_gflops_per_pair",
                           "activation_mb", "unpruned IR@1", "unpruned TR@1", "with method IR@1",
                           "with method TR@1"], rows), ""]
        chance = 5 / payload.get("settings", {}).get("clip_count", 1000)
        collapsed = [r["method"] for r in rows if max(r["unpruned IR@1"], r["unpruned TR@1"]) <= chance]
        if collapsed:
            lines += [f"Near chance (R@1 ≤ 5 / pairs): {', '.join(collapsed)}. That is a training collapse, not a "
                      "pruning loss: the run's `metrics.jsonl` (under `runs/token-reduction/clip-*/pretrain/`) shows "
                      "its ITC loss stuck at ln(batch) with a vanishing gradient norm after an early gradient spike; "
                      "a lower learning rate or longer warm-up is the first thing to try.", ""]
    lines += ["## The papers' claims beside our numbers", "",
              "A difference counts only beyond two standard errors (± shown) of the difference of two accuracies "
              "on the number of pairs / questions evaluated.", "",
              *(claims(payload) or ["(no inference rows yet)"]), "", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    source = Path(sys.argv[1])
    target = source.with_suffix(".md")
    target.write_text(render(json.loads(source.read_text())))
    print(f"wrote {target}")
