"""``vlprune report RUN_DIR``: one self-contained report.html from a demo run's results.json and figures —
tables, accuracy-vs-GFLOPs and accuracy-vs-img/s Pareto fronts, token-keep maps, SmartTrim's per-instance
GFLOPs histogram, MoPE-CLIP's cost-table heat maps and samples (PNGs embedded)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vlprune.report.html import figure_to_data_uri, table_html, write_report

KEEP_MAPS = "keep_maps.png"
SAMPLES = "samples.png"
BASE_COLUMNS = ["model", "method", "task", "score", "vision_gflops", "params", "seconds"]
METHOD_COLUMNS = ["method", "knob", "vision_gflops", "params", "img/s", "speedup", "ideal speedup",
                  "toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc"]
ACCURACY = ("toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc")
COST_KINDS = (("heads", "head"), ("neuron_groups", "FFN neuron group"), ("layers", "layer"))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower is better) and accuracy (higher)."""
    return [i for i, (cost, acc) in enumerate(points)
            if not any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)]


def _pareto_figure(rows: list[dict], cost_key: str, cost_label: str, lower_is_better: bool = True) -> plt.Figure:
    fig, axes = plt.subplots(1, len(ACCURACY), figsize=(4.2 * len(ACCURACY), 3.4))
    for ax, metric in zip(axes, ACCURACY):
        methods = [r for r in rows if all(isinstance(r[k], (int, float)) for k in (cost_key, metric))]
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


def gflops_histogram(smarttrim: dict) -> plt.Figure:
    """SmartTrim's per-instance image-tower GFLOPs on the demo's VQA questions, its mean and the base model's."""
    values = smarttrim["vqa"]["per_instance"]["gflops"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(values, bins=20, color="#4c72b0")
    ax.axvline(float(np.mean(values)), color="k", ls="--", lw=1, label=f"mean {np.mean(values):.4f}")
    ax.axvline(smarttrim["base_vision_gflops"], color="#c44e52", lw=1,
               label=f"base {smarttrim['base_vision_gflops']:.4f}")
    ax.set_xlabel("vision GFLOPs per input (trimmers included)")
    ax.set_ylabel(f"questions (of {len(values)})")
    ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    return fig


def cost_table_panels(tables: list[dict]) -> list[tuple[str, str, np.ndarray]]:
    """(title, unit, layer × unit scores) per cost table and module kind it ranks: heads (layer × head), FFN
    neuron groups (layer × group), layers (layer × 1); rows of unequal length are padded with NaN."""
    panels = []
    for table in tables:
        source = ", ".join(str(x) for x in (table["method"], table.get("info", {}).get("step")) if x)
        for key, unit in COST_KINDS:
            scores = table.get(key)
            if scores is None:
                continue
            rows = [[v] for v in scores] if key == "layers" else scores
            grid = np.full((len(rows), max(map(len, rows), default=0)), np.nan)
            for i, row in enumerate(rows):
                grid[i, :len(row)] = row
            panels.append((f"{table['tower']} {unit}s ({source})", unit, grid))
    return panels


def cost_table_figure(panels: list[tuple[str, str, np.ndarray]]) -> plt.Figure:
    """One heat map per panel (higher = more important; blank = no such unit)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, unit, grid) in zip(axes[0], panels):
        fig.colorbar(ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest"), ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("layer")
        if grid.shape[1] == 1:  # layer scores: one column
            ax.set_xticks([])
        else:
            ax.set_xlabel(unit)
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
                (f"Token methods at a {cut:.0%} image-tower GFLOPs cut, then the shipped SmartTrim / MoPE-CLIP "
                 "checkpoints", table_html(METHOD_COLUMNS, methods)),
                ("Accuracy vs analytic image-tower GFLOPs", f'<img alt="accuracy vs GFLOPs" src="{by_gflops}">'),
                ("Accuracy vs measured images/s (batch 32)", f'<img alt="accuracy vs img/s" src="{by_speed}">')]
    if "smarttrim" in payload:
        uri = figure_to_data_uri(gflops_histogram(payload["smarttrim"]))
        sections.append(("SmartTrim: per-instance image-tower GFLOPs (toy-fusion VQA)",
                         f'<img alt="SmartTrim GFLOPs histogram" src="{uri}">'))
    panels = cost_table_panels(payload.get("mope", {}).get("cost_tables", []))
    if panels:
        uri = figure_to_data_uri(cost_table_figure(panels))
        sections.append(("MoPE-CLIP cost tables (module scores of toy-clip; higher = more important)",
                         f'<img alt="MoPE-CLIP cost tables" src="{uri}">'))
    for title, name in (("Token-keep maps (toy-clip, last reduction step; tinted = merged into the token of that "
                         "colour, dark = dropped)", KEEP_MAPS), ("Toy-world validation samples", SAMPLES)):
        if (run_dir / name).is_file():
            sections.append((title, f'<img alt="{name}" src="{_png_uri(run_dir / name)}">'))
    sections.append(("Setup", f"<p>torch threads: {payload.get('threads')}; GFLOPs are analytic (2 x MACs, attention "
                              "matmuls included); speedups are measured against the base model in the same process at "
                              "batch 32 (SmartTrim: batch-1 latency of the whole VQA forward against the base "
                              "toy-fusion, its ideal speedup from whole-pair GFLOPs).</p>"))
    return write_report(run_dir / "report.html", "vlprune demo", sections)
