"""``vlprune demo``: evaluate the bundled models on the toy world, print one table, write JSON and HTML.

Later methods (token reduction, SmartTrim, MoPE) add their rows to the same table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from vlprune.data.toyworld import ToyWorld
from vlprune.eval.evaluate import evaluate
from vlprune.models.io import load, load_tokenizer
from vlprune.report.html import figure_to_data_uri, table_html, write_report

COLUMNS = ["model", "method", "task", "score", "vision_gflops", "params", "seconds"]
JOBS = (("toy-clip", "retrieval"), ("toy-clip", "zeroshot"), ("toy-fusion", "retrieval"), ("toy-fusion", "vqa"))
SCORE_KEYS = {"retrieval": ("image_retrieval_recall@1", "text_retrieval_recall@1"), "zeroshot": ("acc1",),
              "vqa": ("vqa_accuracy",)}


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


def run_demo(out: Path, count: int = 1000) -> list[dict]:
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
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    widths = [max(len(c), *(len(_cell(r[c])) for r in rows)) for c in COLUMNS]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    for r in rows:
        print("  ".join(_cell(r[c]).ljust(w) for c, w in zip(COLUMNS, widths)))
    sections = [("Results", table_html(COLUMNS, rows)),
                ("Toy-world validation samples", f'<img alt="samples" src="{figure_to_data_uri(_sample_figure())}">'),
                ("Setup", f"<p>torch threads: {torch.get_num_threads()}; GFLOPs are analytic (2 x MACs, "
                          f"attention matmuls included); {np.__name__} {np.__version__}.</p>")]
    report = write_report(out / "report.html", "vlprune demo", sections)
    print(f"wrote {out / 'results.json'} and {report}")
    return rows


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
