"""``vlprune report RUN_DIR``: one self-contained report.html from a demo run's results.json and figures — a
one-screen summary per method, the papers' claims (docs/results/claims.json) with their intervals and verdicts,
tables, accuracy-vs-GFLOPs and accuracy-vs-img/s Pareto fronts, token-keep maps, SmartTrim's per-instance
GFLOPs histogram, MoPE-CLIP's cost-table heat maps and samples (PNGs embedded)."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vlprune.experiments.stats import VERDICTS
from vlprune.report.html import figure_to_data_uri, table_html, write_report

KEEP_MAPS = "keep_maps.png"
SAMPLES = "samples.png"
BASE_COLUMNS = ["model", "method", "task", "score", "vision_gflops", "params", "seconds"]
METHOD_COLUMNS = ["method", "knob", "vision_gflops", "params", "img/s", "speedup", "ideal speedup",
                  "toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc"]
ACCURACY = ("toy-clip IR@1", "toy-clip TR@1", "toy-fusion VQA acc")
COST_KINDS = (("heads", "head"), ("neuron_groups", "FFN neuron group"), ("layers", "layer"))
SHORT = {"toy-clip IR@1": "IR@1", "toy-clip TR@1": "TR@1", "toy-fusion VQA acc": "VQA"}
MARKERS = "osD^vP*Xhp<>"
RESAMPLES = 1000  # the demo's bootstrap of each accuracy (vlprune.experiments.stats.bootstrap_mean_interval)
CLAIMS = Path("docs/results/claims.json")  # written by `vlprune results`; relative to where the report is made
NA = "—"
DODGE = 0.025  # points closer than this share of the x range are spread sideways by it


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower is better) and accuracy (higher)."""
    return [i for i, (cost, acc) in enumerate(points)
            if not any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)]


def pareto_rows(rows: list[dict], cost_key: str, metric: str, lower_is_better: bool = True) -> list[dict]:
    """The rows on the Pareto front of ``metric`` against ``cost_key``, cheapest (or fastest) first."""
    plotted = _plotted(rows, cost_key, metric)
    points = [(r[cost_key] if lower_is_better else -r[cost_key], r[metric]) for r in plotted]
    return [plotted[i] for i in sorted(pareto_front(points), key=lambda i: points[i][0])]


def _plotted(rows: list[dict], cost_key: str, metric: str) -> list[dict]:
    return [r for r in rows if all(isinstance(r[k], (int, float)) for k in (cost_key, metric))]


def pareto_figure(rows: list[dict], cost_key: str, cost_label: str, lower_is_better: bool = True) -> plt.Figure:
    """One panel per accuracy column: every method a marker and colour of its own, named in one legend below the
    panels (no text beside the points, so no two labels can collide), its 95% interval as an error bar, the Pareto
    front dashed."""
    styles = {r["method"]: (MARKERS[i % len(MARKERS)], f"C{i % 10}") for i, r in enumerate(rows)}
    fig, axes = plt.subplots(1, len(ACCURACY), figsize=(4.2 * len(ACCURACY), 3.8), layout="constrained")
    entries: dict = {}
    for ax, metric in zip(axes, ACCURACY):
        plotted = _plotted(rows, cost_key, metric)
        x = dict(zip((r["method"] for r in plotted), dodge([r[cost_key] for r in plotted])))
        for r in plotted:
            low, high = r.get("intervals", {}).get(metric, (r[metric], r[metric]))
            marker, color = styles[r["method"]]
            entries[r["method"]] = ax.errorbar(x[r["method"]], r[metric], yerr=[[r[metric] - low], [high - r[metric]]],
                                               fmt=marker, color=color, ms=6, capsize=3, elinewidth=0.9)
        front = pareto_rows(rows, cost_key, metric, lower_is_better)
        line, = ax.plot([x[r["method"]] for r in front], [r[metric] for r in front], "k--", lw=0.8)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(metric)
    entries["Pareto front"] = line
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(5, len(entries)),
               fontsize=8, frameon=False)
    return fig


def dodge(xs: list[float], step: float = DODGE) -> list[float]:
    """``xs`` with points closer than ``step`` x their range to a neighbour spread sideways, ``step`` apart around
    their own positions, so markers and error bars at one cost stay apart."""
    width = step * (max(xs, default=0) - min(xs, default=0))
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    clusters: list[list[int]] = []
    for i in order:
        if clusters and xs[i] - xs[clusters[-1][-1]] < width:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    out = list(xs)
    for cluster in clusters:
        for k, i in enumerate(cluster):
            out[i] = xs[i] + (k - (len(cluster) - 1) / 2) * width
    return out


def overlapping_labels(fig: plt.Figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` (legend entries, point labels, titles, axis labels, tick labels in view)
    whose boxes overlap."""
    fig.canvas.draw()
    texts = [t for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]  # ax.texts: point labels (annotations)
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * (high - low)
            texts += [t.label1 for t in axis.get_major_ticks() if low - slack <= t.get_loc() <= high + slack]
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


def pareto_caption(payload: dict, cost_key: str, units: str, lower_is_better: bool = True) -> str:
    """The plot's Pareto front per accuracy column, its axis units, the intervals' resampling and what is left
    out (rows without the cost)."""
    rows = payload["methods"]
    fronts = "; ".join(f"{m}: " + ", ".join(r["method"] for r in pareto_rows(rows, cost_key, m, lower_is_better))
                       for m in ACCURACY)
    missing = [r["method"] for r in rows if not isinstance(r[cost_key], (int, float))]
    left_out = f" Not plotted (no {cost_key}): {', '.join(missing)}." if missing else ""
    count = payload.get("method_count")
    return (f"<p>Pareto front (dashed: no other method is both {'cheaper' if lower_is_better else 'faster'} and "
            f"more accurate) — {html.escape(fronts)}. x: {units}. y: accuracy on "
            f"{f'{count} pairs / questions' if count else 'the demo items'}; error bars: 95% percentile-bootstrap "
            f"intervals of the mean ({RESAMPLES:,} resamples of the items, seed 0). Points closer than {DODGE:.1%} of "
            f"the x range are spread sideways by that much (the table has the exact costs).{html.escape(left_out)}</p>")


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


def _cut(row: dict, base: dict) -> float:
    return 1 - row["vision_gflops"] / base["vision_gflops"]


def _kept(row: dict, base: dict, metric: str) -> str:
    """``row``'s accuracy as a share of the base's, with its 95% interval on the same scale."""
    value, reference = row[metric], base[metric]
    if not (isinstance(value, (int, float)) and isinstance(reference, (int, float)) and reference > 0):
        return NA
    low, high = row.get("intervals", {}).get(metric, (value, value))
    return f"{value / reference:.0%} [{low / reference:.0%}, {high / reference:.0%}]"


def paper_of(method: str, claims: list[dict]) -> str | None:
    """The ``paper`` of claims.json that a method row's label starts with (``ELIP λ=1 …`` -> ELIP), if any."""
    return next((p for p in dict.fromkeys(c["paper"] for c in claims) if method.startswith(p)), None)


def verdict_counts(claims: list[dict]) -> str:
    """``2 refuted, 1 inconclusive``: how many claims got each verdict, in the verdicts' order."""
    counts = Counter(c["verdict"] for c in claims)
    return ", ".join(f"{counts[v]} {v}" for v in (*VERDICTS, *sorted(set(counts) - set(VERDICTS))) if counts[v])


def summary_rows(payload: dict, claims: list[dict] | None) -> list[dict]:
    """Per method row: its image-tower GFLOPs cut, accuracy kept (share of the base's, 95% interval), measured
    speedup, and the verdicts of its paper's claims."""
    methods = payload["methods"]
    base = next(r for r in methods if r["method"] == "base")
    rows = []
    for row in methods:
        if row is base:
            continue
        paper = paper_of(row["method"], claims or [])
        ruled = [c for c in claims or [] if c["paper"] == paper]
        verdicts = (f"{paper}: {verdict_counts(ruled)}" if paper else "no claim in claims.json") if claims is not None \
            else "claims.json missing"
        rows.append({"method": row["method"], "GFLOPs cut": f"{_cut(row, base):.0%}",
                     **{f"{SHORT[m]} kept": _kept(row, base, m) for m in ACCURACY},
                     "speedup": f"{row['speedup']:.2f}x" if isinstance(row["speedup"], (int, float)) else NA,
                     "paper's claims": verdicts})
    return rows


def best_kept(payload: dict, tolerance: float = 0.02) -> str:
    """One sentence: per accuracy column, the method that keeps the most of the base's among the rows within
    ``tolerance`` of the run's cut."""
    methods, cut = payload["methods"], payload.get("cut", 0.3)
    base = next(r for r in methods if r["method"] == "base")
    at_cut = [r for r in methods if r is not base and abs(_cut(r, base) - cut) <= tolerance]
    best = []
    for metric in ACCURACY:
        scored = [r for r in at_cut if isinstance(r[metric], (int, float))]
        if scored and isinstance(base[metric], (int, float)):
            top = max(scored, key=lambda r: r[metric])
            best.append(f"{SHORT[metric]}: {top['method']} ({top[metric] / base[metric]:.0%} of the base's)")
    return (f"<p>Most accuracy kept at a {cut:.0%} cut (rows within {tolerance:.0%} of it): "
            f"{html.escape('; '.join(best))}. "
            "Kept = the method's accuracy over the base's on the same items, 95% bootstrap interval in brackets; "
            f"speedup measured against the base in the same process (batch {payload.get('bench_batch', 32)}; "
            "SmartTrim: batch-1 latency).</p>")


def load_claims(path: Path) -> list[dict] | None:
    """The claims of docs/results/claims.json (``vlprune results``), or None when the file is absent."""
    return json.loads(path.read_text()) if path.is_file() else None


def claims_section(claims: list[dict] | None, path: Path) -> str:
    """One row per claim: the two sides' means, the difference with its 95% interval, the verdict (and what an
    unmeasured claim needs)."""
    if claims is None:
        return f"<p>{html.escape(str(path))} not found: `vlprune results` writes it; no claim is shown.</p>"
    rows = []
    for c in claims:
        measured = c.get("difference") is not None
        rows.append({"claim": c["claim"], "paper": c["paper"], "metric": c.get("metric") or NA,
                     "a": f"{c['a']['label']}: {c['a']['mean']:.4f}" if c.get("a") else NA,
                     "b": f"{c['b']['label']}: {c['b']['mean']:.4f}" if c.get("b") else NA,
                     "a − b [95% CI]": f"{c['difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
                     if measured else NA,
                     "verdict": c["verdict"] + (f": needs {c['needs']}" if c.get("needs") and not measured else "")})
    intro = (f"<p>{len(claims)} claims from {html.escape(str(path))} ({html.escape(verdict_counts(claims))}): each "
             "measured one is a paired bootstrap of the difference on the same items; reproduced = the interval lies "
             "inside the claim's tolerance band, refuted = wholly outside, else inconclusive.</p>")
    return intro + table_html(list(rows[0]) if rows else ["claim"], rows)


def _with_intervals(row: dict) -> dict:
    """A method row for the table: each accuracy with its 95% interval."""
    spans = row.get("intervals", {})
    return row | {m: f"{row[m]:.4f} [{spans[m][0]:.4f}, {spans[m][1]:.4f}]" for m in ACCURACY if m in spans}


def render_run(run_dir: Path, claims: Path = CLAIMS) -> Path:
    """Write ``run_dir/report.html`` from ``run_dir/results.json`` (a ``vlprune demo`` run) and ``claims``."""
    source = run_dir / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: `vlprune report` reads the results.json a `vlprune demo "
                                f"--out {run_dir}` run writes")
    payload = json.loads(source.read_text())
    if "methods" not in payload:
        raise ValueError(f"{source} has no 'methods' rows: it was not written by `vlprune demo`")
    methods = payload["methods"]
    cut = payload.get("cut", 0.3)
    batch = payload.get("bench_batch", 32)
    ruled = load_claims(claims)
    summary = summary_rows(payload, ruled)
    by_gflops = figure_to_data_uri(pareto_figure(methods, "vision_gflops", "image-tower GFLOPs / image"))
    by_speed = figure_to_data_uri(pareto_figure(methods, "img/s", f"images/s (batch {batch})", lower_is_better=False))
    gflops_units = ("analytic image-tower GFLOPs per image (GFLOPs = 2 x multiply-accumulates, attention matmuls "
                    "included; SmartTrim: mean over its questions, trimmers included)")
    speed_units = (f"images/s of the image tower at batch {batch}, {payload.get('threads')} torch threads, measured "
                   "in the same process as the base")
    sections = [(f"Summary: each method at a {cut:.0%} image-tower GFLOPs cut",
                 best_kept(payload) + table_html(list(summary[0]) if summary else ["method"], summary)),
                ("Accuracy vs analytic image-tower GFLOPs", f'<img alt="accuracy vs GFLOPs" src="{by_gflops}">'
                 + pareto_caption(payload, "vision_gflops", gflops_units)),
                (f"Accuracy vs measured images/s (batch {batch})", f'<img alt="accuracy vs img/s" src="{by_speed}">'
                 + pareto_caption(payload, "img/s", speed_units, lower_is_better=False)),
                ("The papers' claims, decided", claims_section(ruled, claims)),
                ("Bundled models", table_html(BASE_COLUMNS, payload.get("base_rows", []))),
                (f"Token methods at a {cut:.0%} image-tower GFLOPs cut, then the shipped SmartTrim / MoPE-CLIP "
                 "checkpoints (accuracy [95% interval])",
                 table_html(METHOD_COLUMNS, [_with_intervals(r) for r in methods]))]
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
                              f"batch {batch} (SmartTrim: batch-1 latency of the whole VQA forward against the base "
                              "toy-fusion, its ideal speedup from whole-pair GFLOPs).</p>"))
    return write_report(run_dir / "report.html", "vlprune demo", sections)
