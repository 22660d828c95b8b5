"""``vlprune report RUN_DIR``: one self-contained report.html from a demo run's results.json and figures —
tables, accuracy-vs-GFLOPs and accuracy-vs-img/s Pareto fronts, token-keep maps and samples (PNGs embedded)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vlprune.report.html import figure_to_data_uri, table_html, write_report

KEEP_MAPS = "keep_maps.png"
SAMPLES = "samples.png"
BASE_COLUMNS = ["model", "method", "task", "score", "vision_gflops", "params", "seconds"]
METHOD_COLUMNS = ["method", "knob", "vision_gflops", "params", "img/s", "speedup", "ideal speedup",
                  "toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc"]
ACCURACY = ("toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower is better) and accuracy (higher)."""
    return [i for i, (cost, acc) in enumerate(points)
            if not any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)]


def _pareto_figure(methods: list[dict], cost_key: str, cost_label: str, lower_is_better: bool = True) -> plt.Figure:
    fig, axes = plt.subplots(1, len(ACCURACY), figsize=(4.2 * len(ACCURACY), 3.4))
    for ax, metric in zip(axes, ACCURACY):
        costs = [r[cost_key] if lower_is_better else -r[cost_key] for r in methods]
        points = list(zip(costs, [r[metric] for r in methods]))
        front = sorted(pareto_front(points), key=lambda i: points[i][0])
        for r in methods:
            ax.scatter(r[cost_key], r[metric], s=28)
            ax.annotate(r["method"], (r[cost_key], r[metric]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.plot([methods[i][cost_key] for i in front], [methods[i][metric] for i in front], "k--", lw=0.8,
                label="Pareto front")
        ax.set_xlabel(cost_label)
        ax.set_ylabel(metric)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_run(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from ``run_dir/results.json`` (a ``vlprune demo`` run)."""
    source = run_dir / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: `vlprune report` reads the results.json a `vlprune demo "
                                f"--out {run_dir}` run writes")
    payload = json.loads(source.read_text())
    if "methods" not in payload:
        raise ValueError(f"{source} has no 'methods' rows: it was not written by `vlprune demo`")
    methods = payload["methods"]
    cut = payload.get("cut", 0.3)
    by_gflops = figure_to_data_uri(_pareto_figure(methods, "vision_gflops", "vision GFLOPs / image"))
    by_speed = figure_to_data_uri(_pareto_figure(methods, "img/s", "images/s", lower_is_better=False))
    sections = [("Bundled models", table_html(BASE_COLUMNS, payload.get("base_rows", []))),
                (f"Token methods at a {cut:.0%} image-tower GFLOPs cut", table_html(METHOD_COLUMNS, methods)),
                ("Accuracy vs analytic image-tower GFLOPs", f'<img alt="accuracy vs GFLOPs" src="{by_gflops}">'),
                ("Accuracy vs measured images/s (batch 32)", f'<img alt="accuracy vs img/s" src="{by_speed}">')]
    for title, name in (("Token-keep maps (toy-clip, last reduction step; tinted = merged into the token of that "
                         "colour, dark = dropped)", KEEP_MAPS), ("Toy-world validation samples", SAMPLES)):
        if (run_dir / name).is_file():
            sections.append((title, f'<img alt="{name}" src="{_png_uri(run_dir / name)}">'))
    sections.append(("Setup", f"<p>torch threads: {payload.get('threads')}; GFLOPs are analytic (2 x MACs, attention "
                              "matmuls included); speedups are measured against the base model in the same process at "
                              "batch 32.</p>"))
    return write_report(run_dir / "report.html", "vlprune demo", sections)
