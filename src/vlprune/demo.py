"""``vlprune demo``: evaluate the bundled models on the toy world, print one table, write JSON and HTML.

Base models first, then every token method at a matched 30 % cut of image-tower GFLOPs (measured speed in the
same process). SmartTrim and MoPE-CLIP rows join when their trimmed / pruned checkpoints are shipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vlprune.data.pairs import to_pixels
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.bench import bench_image_tower
from vlprune.eval.evaluate import evaluate
from vlprune.models.io import load, load_tokenizer
from vlprune.reduce.base import apply as vlprune_apply
from vlprune.reduce.budget import MATCHABLE, VARIANTS
from vlprune.report.run_report import BASE_COLUMNS, KEEP_MAPS, METHOD_COLUMNS, SAMPLES, render_run
from vlprune.report.tokens import keep_map_figure, keep_maps

JOBS = (("toy-clip", "retrieval"), ("toy-clip", "zeroshot"), ("toy-fusion", "retrieval"), ("toy-fusion", "vqa"))
SCORE_KEYS = {"retrieval": ("image_retrieval_recall@1", "text_retrieval_recall@1"), "zeroshot": ("acc1",),
              "vqa": ("vqa_accuracy",)}
CUT = 0.3  # every token method at 30 % fewer image-tower GFLOPs than the base
GUIDED_K = 4  # text-guided methods re-encode each query's top-k in retrieval


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


def method_rows(models: dict, count: int, bench_iters: int = 3) -> tuple[list[dict], list[dict], dict]:
    """Base and every token method at ``CUT``: GFLOPs, measured img/s and speedup at batch 32 (same process),
    toy-clip retrieval R@1 and toy-fusion VQA accuracy; plus token-keep maps of the toy-clip image tower."""
    clip, clip_tok = models["toy-clip"]
    fusion, fusion_tok = models["toy-fusion"]
    settings = [("base", None)] + [(label, make(clip.config, CUT)) for label, make in VARIANTS.items()]
    speed = {row.method: row for row in bench_image_tower(clip, [c.spec() if c else "none" for _, c in settings],
                                                           batch_sizes=(32,), warmup=1, iters=bench_iters)}
    world = ToyWorld("val", image_size=clip.config.vision.image_size)
    images = [world.image(i) for i in range(6)]
    pixels = to_pixels(images, clip.config.vision)
    guide = clip.text_guide(*clip_tok([world.scene(i).caption for i in range(6)]))
    rows, results, maps = [], [], {}
    for label, config in tqdm(settings, desc="methods", unit="method"):
        vlprune_apply(clip, config)
        vlprune_apply(fusion, config)
        retrieval = evaluate(clip, clip_tok, "retrieval", f"toyworld:val:{count}",
                             rerank_k=GUIDED_K if config is not None and config.text_guided else 0)
        vqa = evaluate(fusion, fusion_tok, "vqa", f"toyworld:val:{count}")
        bench = speed[config.spec() if config else "none"]
        if config is not None:
            maps[label] = keep_maps(clip, pixels, guide=guide)
        results += [retrieval, vqa]
        m = retrieval["metrics"]
        rows.append({"method": label, "knob": MATCHABLE[config.method](config) if config else "—",
                     "vision_gflops": retrieval["costs"]["vision_gflops"], "params": retrieval["costs"]["params"],
                     "img/s": bench.images_per_s, "speedup": bench.measured_speedup,
                     "ideal speedup": bench.ideal_speedup, "toy-clip IR@1": m["image_retrieval_recall@1"],
                     "toy-clip TR@1": m["text_retrieval_recall@1"],
                     "toy-fusion VQA acc": vqa["metrics"]["vqa_accuracy"]})
    vlprune_apply(clip, None)
    vlprune_apply(fusion, None)
    return rows, results, keep_map_figure(images, maps, [world.scene(i).caption for i in range(6)])


def run_demo(out: Path, count: int = 1000, method_count: int = 500) -> list[dict]:
    """Evaluate the bundled models (``count`` pairs / questions), then every token method at a 30 % cut
    (``method_count`` pairs / questions each); print the tables (kept in table.txt), write results.json and
    report.html."""
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    models = {name: (load(name), load_tokenizer(name)) for name in dict.fromkeys(name for name, _ in JOBS)}
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
    methods, method_results, keep_figure = method_rows(models, method_count)
    printed += [f"\nToken methods at {CUT:.0%} fewer image-tower GFLOPs ({method_count} pairs / questions; img/s "
                f"and speedup at batch 32, measured against the base in this process, {torch.get_num_threads()} "
                f"threads):", _table(METHOD_COLUMNS, methods)]
    print("\n".join(printed[1:]))
    (out / "table.txt").write_text("\n".join(printed) + "\n")
    keep_figure.savefig(out / KEEP_MAPS, dpi=110, bbox_inches="tight")
    _sample_figure().savefig(out / SAMPLES, dpi=110, bbox_inches="tight")
    (out / "results.json").write_text(json.dumps({"base_rows": rows, "methods": methods, "cut": CUT,
                                                  "threads": torch.get_num_threads(), "base": results,
                                                  "method_results": method_results}, indent=2) + "\n")
    report = render_run(out)
    print(f"wrote {out / 'results.json'} and {report}")
    return rows + methods


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
