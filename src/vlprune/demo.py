"""``vlprune demo``: evaluate the bundled models on the toy world, print one table, write JSON and HTML.

Base models first, then every token method at a matched 30 % cut of image-tower GFLOPs (measured speed in the
same process). SmartTrim and MoPE-CLIP rows join when their trimmed / pruned checkpoints are shipped (``SHIPPED``);
an absent one is skipped with one printed line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.bench import bench_image_tower
from vlprune.eval.evaluate import evaluate
from vlprune.eval.smarttrim import batch1_inputs, batch1_latency, static_scorer, trim_scorer, vqa_run
from vlprune.experiments.stats import bootstrap_mean_interval
from vlprune.models.fusion import FusionModel
from vlprune.models.io import Model, load, load_tokenizer
from vlprune.reduce.base import apply as vlprune_apply
from vlprune.reduce.base import vision_gflops
from vlprune.reduce.budget import MATCHABLE, VARIANTS
from vlprune.registry import ASSETS, bundled_dir
from vlprune.report.run_report import BASE_COLUMNS, KEEP_MAPS, METHOD_COLUMNS, SAMPLES, render_run
from vlprune.report.tokens import keep_map_figure, keep_maps
from vlprune.structured.importance import CostTable
from vlprune.tokenizer import WordTokenizer
from vlprune.trim.io import load_trimmed
from vlprune.trim.model import SmartTrim

JOBS = (("toy-clip", "retrieval"), ("toy-clip", "zeroshot"), ("toy-fusion", "retrieval"), ("toy-fusion", "vqa"))
SCORE_KEYS = {"retrieval": ("image_retrieval_recall@1", "text_retrieval_recall@1"), "zeroshot": ("acc1",),
              "vqa": ("vqa_accuracy",)}
CUT = 0.3  # every token method at 30 % fewer image-tower GFLOPs than the base
GUIDED_K = 4  # text-guided methods re-encode each query's top-k in retrieval
BENCH_BATCH = 32  # img/s and speedup of the token methods and MoPE-CLIP
LATENCY_INPUTS = 50  # SmartTrim's batch-1 latency: at most this many of the questions
NA = "—"  # a column that does not apply to a row
# row -> (checkpoint directory under the assets, what writes it); the row is skipped when it is absent
# accuracy column -> the per-item score whose mean it is (its 95% bootstrap interval goes beside it)
PER_ITEM = {"toy-clip IR@1": "image_retrieval_hit@1", "toy-clip TR@1": "text_retrieval_hit@1",
            "toy-fusion VQA acc": "vqa_score"}
SHIPPED = {"SmartTrim": ("toy-fusion-smarttrim", "scripts/train_bundled.sh"),
           "MoPE-CLIP": ("toy-clip-mope", "scripts/train_bundled.sh")}


def shipped_checkpoints(assets: Path = ASSETS) -> dict[str, Path]:
    """Row label -> checkpoint of the ``SHIPPED`` rows present; prints one line per row skipped."""
    found = {}
    for row, (name, script) in SHIPPED.items():
        path = bundled_dir(name, assets)
        if path is None:
            print(f"skipping the {row} row: no checkpoint in {assets / name} (written by {script})")
        else:
            found[row] = path
    return found


def load_cost_tables(directory: Path) -> list[dict]:
    """The cost tables ``vlprune prune`` writes (``cost_tables/*.json`` beside the model), each with its file."""
    return [{"file": path.name, **CostTable.from_dict(json.loads(path.read_text())).to_dict()}
            for path in sorted((directory / "cost_tables").glob("*.json"))]


def _intervals(*results: dict) -> dict[str, list[float]]:
    """Accuracy column -> 95% bootstrap interval of its mean from the results' per-item scores (popped from the
    results: results.json keeps the intervals)."""
    items: dict = {}
    for result in results:
        items |= result["metrics"].pop("per_item")
    return {column: list(bootstrap_mean_interval(items[key])) for column, key in PER_ITEM.items() if key in items}


def _score(task: str, metrics: dict) -> str:
    return " / ".join(f"{k}={metrics[k]:.3f}" for k in SCORE_KEYS[task])


def _sample_figure(count: int = 8):
    import matplotlib.pyplot as plt

    world = ToyWorld("val")
    fig, axes = plt.subplots(2, count // 2, figsize=(2.2 * count // 2, 5.2))
    for i, ax in enumerate(axes.flat):
        ax.imshow(world.image(i))
        ax.set_title("\n".join(_wrap(world.scene(i).caption, 28)), fontsize=6)
        ax.axis("off")
    return fig


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


def _table(columns: list[str], rows: list[dict]) -> str:
    widths = [max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(_cell(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def method_rows(models: dict, count: int, bench_iters: int = 3, pruned: tuple[Model, WordTokenizer] | None = None
                ) -> tuple[list[dict], list[dict], dict]:
    """Base and every token method at ``CUT``: GFLOPs, measured img/s and speedup at ``BENCH_BATCH`` (same
    process), toy-clip retrieval R@1 and toy-fusion VQA accuracy with their 95% intervals; plus token-keep maps
    of the toy-clip image tower.
    ``pruned`` (a structurally pruned toy-clip and its tokenizer) adds the MoPE-CLIP row, timed in the same
    benchmark rounds."""
    clip, clip_tok = models["toy-clip"]
    fusion, fusion_tok = models["toy-fusion"]
    settings = [("base", None)] + [(label, make(clip.config, CUT)) for label, make in VARIANTS.items()]
    others = {"MoPE-CLIP": pruned[0]} if pruned else {}
    speed = {row.method: row for row in bench_image_tower(clip, [c.spec() if c else "none" for _, c in settings],
                                                           batch_sizes=(BENCH_BATCH,), warmup=1, iters=bench_iters,
                                                           others=others)}
    world = ToyWorld("val", image_size=clip.config.vision.image_size)
    images = [world.image(i) for i in range(6)]
    pixels = to_pixels(images, clip.config.vision)
    guide = clip.text_guide(*clip_tok([world.scene(i).caption for i in range(6)]))
    rows, results, maps = [], [], {}
    for label, config in tqdm(settings, desc="methods", unit="method"):
        vlprune_apply(clip, config)
        vlprune_apply(fusion, config)
        retrieval = evaluate(clip, clip_tok, "retrieval", f"toyworld:val:{count}",
                             rerank_k=GUIDED_K if config is not None and config.text_guided else 0, per_item=True)
        vqa = evaluate(fusion, fusion_tok, "vqa", f"toyworld:val:{count}", per_item=True)
        if config is not None:
            maps[label] = keep_maps(clip, pixels, guide=guide)
        results += [retrieval, vqa]
        knob = MATCHABLE[config.method](config) if config else NA
        rows.append(_clip_row(label, knob, retrieval, speed[config.spec() if config else "none"])
                    | {"toy-fusion VQA acc": vqa["metrics"]["vqa_accuracy"], "intervals": _intervals(retrieval, vqa)})
    vlprune_apply(clip, None)
    vlprune_apply(fusion, None)
    if pruned:
        retrieval = evaluate(*pruned, "retrieval", f"toyworld:val:{count}", rerank_k=0, per_item=True)
        share = pruned[0].num_params("vision") / clip.num_params("vision")
        results.append(retrieval)
        rows.append(_clip_row("MoPE-CLIP", f"vision params {share:.0%}", retrieval, speed["MoPE-CLIP"])
                    | {"toy-fusion VQA acc": NA, "intervals": _intervals(retrieval)})
    return rows, results, keep_map_figure(images, maps, [world.scene(i).caption for i in range(6)])


def _clip_row(label: str, knob: str, retrieval: dict, bench) -> dict:
    """A method row's toy-clip columns: costs from the retrieval result, speed from the benchmark row."""
    m = retrieval["metrics"]
    return {"method": label, "knob": knob, "vision_gflops": retrieval["costs"]["vision_gflops"],
            "params": retrieval["costs"]["params"], "img/s": bench.images_per_s, "speedup": bench.measured_speedup,
            "ideal speedup": bench.ideal_speedup, "toy-clip IR@1": m["image_retrieval_recall@1"],
            "toy-clip TR@1": m["text_retrieval_recall@1"]}


@torch.no_grad()
def smarttrim_row(trim: SmartTrim, tokenizer: WordTokenizer, base: FusionModel, count: int) -> tuple[dict, dict]:
    """The SmartTrim row: VQA accuracy with the trimmers on (hard masks) over ``count`` questions, mean per-instance
    image-tower GFLOPs (trimmers included), params with the trimmers'; batch-1 latency of the whole VQA forward
    against ``base`` on the same questions, beside the FLOP-ideal speedup of whole pairs. Also the details."""
    world = ToyWorld("val", image_size=trim.model.config.vision.image_size)
    vqa = vqa_run(trim_scorer(trim, "vqa", vision_only=True), trim.model.config.vision, tokenizer, world, count)
    if base.config.vision != trim.model.config.vision:
        raise ValueError("the SmartTrim checkpoint's image tower config differs from the base toy-fusion's: its "
                         "latency would not be compared on the same inputs; re-create it from this toy-fusion")
    n = min(count, LATENCY_INPUTS)
    inputs = batch1_inputs(tokenizer, world, base.config.vision, n)  # the same inputs for both
    ms = batch1_latency({"base": lambda i: base.vqa_logits(*inputs[i]),
                         "SmartTrim": lambda i: trim.vqa_logits(*inputs[i], mode="hard")}, n)
    scorers = {"base": static_scorer(base, "vqa"), "SmartTrim": trim_scorer(trim, "vqa")}
    pair = {name: float(np.mean([score(*x)[1][0] for x in inputs])) for name, score in scorers.items()}
    c = trim.config
    row = {"method": "SmartTrim", "knob": f"targets v/t/h={c.target_vision:g}/{c.target_text:g}/{c.target_heads:g}",
           "vision_gflops": vqa["gflops"]["mean"], "params": trim.model.num_params() + trim.trimmer_params(),
           "img/s": NA, "speedup": ms["base"] / ms["SmartTrim"], "ideal speedup": pair["base"] / pair["SmartTrim"],
           "toy-clip IR@1": NA, "toy-clip TR@1": NA, "toy-fusion VQA acc": vqa["vqa_accuracy"],
           "intervals": {"toy-fusion VQA acc": list(bootstrap_mean_interval(vqa["per_instance"]["correct"]))}}
    latency = {"inputs": n, "ms": ms, "pair_gflops": pair, "scope": "whole VQA forward at batch 1, text unpadded"}
    return row, {"config": c.to_dict(), "trimmer_params": trim.trimmer_params(), "base_vision_gflops":
                 vision_gflops(base), "vqa": vqa, "latency": latency}


def run_demo(out: Path, count: int = 1000, method_count: int = 500, assets: Path = ASSETS) -> list[dict]:
    """Evaluate the bundled models of ``assets`` (``count`` pairs / questions), then every token method at a 30 %
    cut and the shipped SmartTrim / MoPE-CLIP checkpoints (``method_count`` pairs / questions each); print the
    tables (kept in table.txt), write results.json and report.html."""
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    models = {name: (load(assets / name), load_tokenizer(assets / name)) for name in dict.fromkeys(n for n, _ in JOBS)}
    for name, task in JOBS:
        model, tokenizer = models[name]
        start = time.perf_counter()
        result = evaluate(model, tokenizer, task, f"toyworld:val:{count}")
        result["threads"] = torch.get_num_threads()
        results.append(result)
        rows.append({"model": name, "method": "base", "task": task, "score": _score(task, result["metrics"]),
                     "vision_gflops": result["costs"]["vision_gflops"], "params": result["costs"]["params"],
                     "seconds": time.perf_counter() - start})
    printed = [_table(BASE_COLUMNS, rows)]
    print(printed[-1])
    found = shipped_checkpoints(assets)
    extra: dict = {}
    pruned = None
    if "MoPE-CLIP" in found:
        pruned = (load(found["MoPE-CLIP"]), load_tokenizer(found["MoPE-CLIP"]))
        extra["mope"] = {"checkpoint": str(found["MoPE-CLIP"]), "cost_tables": load_cost_tables(found["MoPE-CLIP"])}
    methods, method_results, keep_figure = method_rows(models, method_count, pruned=pruned)
    if "SmartTrim" in found:
        row, details = smarttrim_row(load_trimmed(found["SmartTrim"]), load_tokenizer(found["SmartTrim"]),
                                     models["toy-fusion"][0], method_count)
        methods.append(row)
        extra["smarttrim"] = {"checkpoint": str(found["SmartTrim"]), **details}
    printed += [f"\nToken methods at {CUT:.0%} fewer image-tower GFLOPs, then the shipped SmartTrim / MoPE-CLIP "
                f"checkpoints ({method_count} pairs / questions; img/s and speedup at batch {BENCH_BATCH}, measured "
                f"against the base in this process, {torch.get_num_threads()} threads):",
                _table(METHOD_COLUMNS, methods)]
    if "smarttrim" in extra:
        printed.append("SmartTrim: mean per-instance GFLOPs; speedup = batch-1 latency of the whole VQA forward vs "
                       "the base toy-fusion, ideal = whole-pair GFLOPs ratio.")
    print("\n".join(printed[1:]))
    (out / "table.txt").write_text("\n".join(printed) + "\n")
    keep_figure.savefig(out / KEEP_MAPS, dpi=110, bbox_inches="tight")
    _sample_figure().savefig(out / SAMPLES, dpi=110, bbox_inches="tight")
    (out / "results.json").write_text(json.dumps({"base_rows": rows, "methods": methods, "cut": CUT,
                                                  "method_count": method_count, "bench_batch": BENCH_BATCH,
                                                  "threads": torch.get_num_threads(), "base": results,
                                                  "method_results": method_results, **extra}, indent=2) + "\n")
    report = render_run(out)
    print(f"wrote {out / 'results.json'} and {report}")
    return rows + methods


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
