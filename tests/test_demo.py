"""The demo on the bundled models: one table, results.json and a self-contained report.html."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlprune
from vlprune.cli import main
from vlprune.reduce.budget import VARIANTS
from vlprune.registry import bundled_dir
from vlprune.report.run_report import ACCURACY, CLAIMS
from vlprune.structured import PrunePlan, prune
from vlprune.structured.budget import target_count, width_plan
from vlprune.structured.importance import magnitude_table
from vlprune.trim import SmartTrim, SmartTrimConfig
from vlprune.trim.io import load_trimmed, save_trimmed

pytestmark = pytest.mark.skipif(not (bundled_dir("toy-clip") and bundled_dir("toy-fusion")),
                                reason="bundled models not trained yet (scripts/train_bundled.sh)")


def _smarttrim_checkpoint(directory: Path) -> None:
    """toy-fusion with random trimmer weights (untrained: decisions vary per input), saved as SmartTrim saves."""
    trim = SmartTrim(vlprune.load("toy-fusion"), SmartTrimConfig())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trim.trimmers.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    save_trimmed(trim.eval(), directory, vlprune.load_tokenizer("toy-fusion"))


def _pruned_checkpoint(directory: Path) -> None:
    """toy-clip's image tower width-pruned to 60 % by magnitude (no distillation), with a width and a depth cost
    table in cost_tables/ as `vlprune prune` writes them."""
    model = vlprune.load("toy-clip")
    width = magnitude_table(model, "vision", ("head", "group"))
    width.info["step"] = "width"
    pruned = prune(model, PrunePlan({"vision": width_plan(model, width, target_count(model, "vision", 0.6))}))
    vlprune.save(pruned, directory, vlprune.load_tokenizer("toy-clip"))
    depth = magnitude_table(pruned, "vision", ("layer",))
    depth.info["step"] = "depth"
    width.save(directory / "cost_tables" / "0-vision-width.json")
    depth.save(directory / "cost_tables" / "1-vision-depth.json")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One small demo run (24 pairs; 12 per method) shared by the tests of this file, on an assets directory with
    the bundled models and test-made SmartTrim / MoPE-CLIP checkpoints."""
    from vlprune.demo import SHIPPED, run_demo

    assets = tmp_path_factory.mktemp("assets")
    for name in ("toy-clip", "toy-fusion"):
        (assets / name).symlink_to(bundled_dir(name))
    _smarttrim_checkpoint(assets / SHIPPED["SmartTrim"][0])
    _pruned_checkpoint(assets / SHIPPED["MoPE-CLIP"][0])
    out = tmp_path_factory.mktemp("demo")
    rows = run_demo(out, count=24, method_count=12, assets=assets)
    return out, rows


@pytest.fixture(scope="module")
def report_run(request) -> Path:
    """The run whose report the browser and overlap checks read: ``VLPRUNE_REPORT_RUN`` (a full `vlprune demo`
    output, as `make report-screenshot` passes) or else the small demo."""
    full = os.environ.get("VLPRUNE_REPORT_RUN")
    return Path(full).resolve() if full else request.getfixturevalue("demo_run")[0]


def test_demo_writes_table_results_and_report(demo_run, capsys):
    tmp_path, rows = demo_run
    printed = (tmp_path / "table.txt").read_text()
    assert [(r["model"], r["task"]) for r in rows[:4]] == [("toy-clip", "retrieval"), ("toy-clip", "zeroshot"),
                                                            ("toy-fusion", "retrieval"), ("toy-fusion", "vqa")]
    assert [r["method"] for r in rows[4:]][:1] == ["base"] and len(rows) == 4 + 1 + len(VARIANTS) + 2
    assert [r["method"] for r in rows[-2:]] == ["MoPE-CLIP", "SmartTrim"]
    base_gflops = rows[4]["vision_gflops"]
    assert all(abs(r["vision_gflops"] / base_gflops - 0.7) < 0.02 for r in rows[5:-2])  # matched at a 30 % cut
    assert "vision_gflops" in printed.splitlines()[0] and "ideal speedup" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["base"][0]["metrics"]["image_retrieval_recall@1"] <= 1.0
    assert results["base"][3]["metrics"]["questions"] == 24
    page = (tmp_path / "report.html").read_text()
    claims = json.loads(CLAIMS.read_text())
    method_rows = 1 + 1 + len(VARIANTS) + 2  # header, base, token methods, MoPE-CLIP and SmartTrim
    assert page.count("<table>") == 4 and page.count("<tr>") == method_rows - 1 + 1 + len(claims) + 5 + method_rows
    assert page.index("Summary: each method") < page.index("Accuracy vs analytic") < page.index("The papers")
    assert "Accuracy vs analytic image-tower GFLOPs" in page and "Token-keep maps" in page
    assert "SmartTrim: per-instance image-tower GFLOPs" in page and "MoPE-CLIP cost tables" in page
    (tmp_path / "report.html").unlink()
    assert main(["report", str(tmp_path)]) == 0 and (tmp_path / "report.html").read_text() == page
    images = re.findall(r'src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


def test_every_accuracy_has_its_interval(demo_run):
    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    for row in results["methods"]:
        measured = [m for m in ACCURACY if isinstance(row[m], float)]
        assert measured and sorted(row["intervals"]) == sorted(measured), row["method"]
        assert all(row["intervals"][m][0] <= row[m] <= row["intervals"][m][1] for m in measured), row["method"]
    assert all("per_item" not in r["metrics"] for r in results["method_results"])  # intervals kept, not the items
    base = results["methods"][0]
    low, high = base["intervals"]["toy-clip IR@1"]
    assert f"{base['toy-clip IR@1']:.4f} [{low:.4f}, {high:.4f}]" in (run_dir / "report.html").read_text()


def test_summary_and_claims_sections(demo_run, tmp_path):
    from vlprune.report.run_report import render_run, summary_rows, verdict_counts

    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    claims = json.loads(CLAIMS.read_text())
    summary = {r["method"]: r for r in summary_rows(results, claims)}
    assert list(summary) == [r["method"] for r in results["methods"][1:]]
    elip = [c for c in claims if c["paper"] == "ELIP"]
    assert summary["ELIP λ=1 (vision only)"]["paper's claims"] == f"ELIP: {verdict_counts(elip)}"
    assert summary["EViT"]["paper's claims"] == "no claim in claims.json"
    assert 28 <= int(summary["EViT"]["GFLOPs cut"].rstrip("%")) <= 32 and summary["MoPE-CLIP"]["VQA kept"] == "—"
    page = (run_dir / "report.html").read_text()
    measured = next(c for c in claims if c["difference"] is not None)
    assert measured["claim"] in page and f"[{measured['ci_low']:+.4f}, {measured['ci_high']:+.4f}]" in page
    shutil.copy(run_dir / "results.json", tmp_path / "results.json")
    page = render_run(tmp_path, claims=tmp_path / "claims.json").read_text()
    assert f"{tmp_path / 'claims.json'} not found" in page and "claims.json missing" in page


def test_pareto_plot_labels_never_overlap(report_run):
    """Every method is named once in the legend (distinct marker and colour), no drawn text overlaps another, and
    each caption names its front; the overlap check itself catches colliding point labels."""
    import matplotlib.pyplot as plt

    from vlprune.report.run_report import overlapping_labels, pareto_figure, pareto_rows

    results = json.loads((report_run / "results.json").read_text())
    methods = results["methods"]
    for cost_key, higher in (("vision_gflops", False), ("img/s", True)):
        figure = pareto_figure(methods, cost_key, cost_key, lower_is_better=not higher)
        named = [t.get_text() for t in figure.legends[0].get_texts()]
        plotted = [r["method"] for r in methods if any(isinstance(r[k], float) for k in ACCURACY)
                   and isinstance(r[cost_key], (int, float))]
        assert named == plotted + ["Pareto front"] and overlapping_labels(figure) == []
        plt.close(figure)
        front = ", ".join(r["method"] for r in pareto_rows(methods, cost_key, "toy-clip IR@1", not higher))
        assert f"toy-clip IR@1: {front};" in (report_run / "report.html").read_text()
    figure, ax = plt.subplots()
    for label in ("ELIP", "EViT"):  # two labels beside the same point: the old plots' collision
        ax.annotate(label, (0.5, 0.5), xytext=(3, 3), textcoords="offset points")
    assert overlapping_labels(figure) == [("ELIP", "EViT")]
    plt.close(figure)


def test_smarttrim_row_is_the_mean_of_its_per_instance_gflops(demo_run):
    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    row = next(r for r in results["methods"] if r["method"] == "SmartTrim")
    per_instance = results["smarttrim"]["vqa"]["per_instance"]["gflops"]
    assert len(per_instance) == 12 and row["vision_gflops"] == pytest.approx(np.mean(per_instance))
    assert row["vision_gflops"] < results["smarttrim"]["base_vision_gflops"]
    trim = load_trimmed(results["smarttrim"]["checkpoint"])
    assert row["params"] == trim.model.num_params() + trim.trimmer_params()
    assert row["toy-fusion VQA acc"] == results["smarttrim"]["vqa"]["vqa_accuracy"]
    assert row["img/s"] == row["toy-clip IR@1"] == "—" and row["speedup"] > 0
    latency = results["smarttrim"]["latency"]
    assert row["ideal speedup"] == pytest.approx(latency["pair_gflops"]["base"] / latency["pair_gflops"]["SmartTrim"])


def test_mope_row_and_cost_table_heat_maps(demo_run):
    from vlprune.report.run_report import cost_table_figure, cost_table_panels

    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    row = next(r for r in results["methods"] if r["method"] == "MoPE-CLIP")
    base = next(r for r in results["methods"] if r["method"] == "base")
    assert row["params"] < base["params"] and row["vision_gflops"] < base["vision_gflops"]
    assert row["toy-fusion VQA acc"] == "—" and 0.0 <= row["toy-clip IR@1"] <= 1.0 and row["img/s"] > 0
    assert row["ideal speedup"] == pytest.approx(base["vision_gflops"] / row["vision_gflops"])
    tables = results["mope"]["cost_tables"]
    assert [t["file"] for t in tables] == ["0-vision-width.json", "1-vision-depth.json"]
    panels = cost_table_panels(tables)
    width, depth = tables
    assert [grid.shape for _, _, grid in panels] == [(12, len(width["heads"][0])), (12, 8), (len(depth["layers"]), 1)]
    assert np.array_equal(panels[1][2], np.array(width["neuron_groups"]))
    figure = cost_table_figure(panels)
    assert [ax.images[0].get_array().shape for ax in figure.axes if ax.images] == [g.shape for _, _, g in panels]


def test_absent_checkpoints_are_skipped_with_one_line_each(tmp_path, capsys):
    from vlprune.demo import SHIPPED, shipped_checkpoints

    assert shipped_checkpoints(tmp_path) == {}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHIPPED)
    for line, (row, (name, script)) in zip(lines, SHIPPED.items()):
        assert line.startswith(f"skipping the {row} row") and str(tmp_path / name) in line and script in line


CHROMIUM = shutil.which(os.environ.get("VLPRUNE_CHROMIUM", "chromium"))
_CHECK = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(im => !(im.complete && im.naturalWidth > 0)).length;
  const out = document.createElement("pre"); out.id = "browser-check";
  out.textContent = `images=${images.length} broken=${broken} tables=${document.querySelectorAll("table").length}`;
  document.body.appendChild(out);
});</script>"""


def _chromium(*args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None and "VLPRUNE_SCREENSHOT" not in os.environ,
                    reason="headless Chromium not installed (Debian package chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(report_run, tmp_path):
    """Every embedded plot decodes in a real browser (non-zero natural size) and every table is there; the
    screenshot is kept (``VLPRUNE_SCREENSHOT`` names where: `make report-screenshot` writes docs/report.png from
    the full demo, never from the small one)."""
    assert CHROMIUM, "VLPRUNE_SCREENSHOT is set but headless Chromium is not installed (Debian package chromium)"
    run_dir = report_run
    page = (run_dir / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _CHECK + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri())
    found = re.search(r"images=(\d+) broken=(\d+) tables=(\d+)", dom)
    assert found, "the check script did not run in Chromium"
    images, broken, tables = map(int, found.groups())
    assert images == page.count("<img") and images >= 6 and broken == 0 and tables == page.count("<table>") >= 3
    shot = Path(os.environ.get("VLPRUNE_SCREENSHOT", tmp_path / "report.png")).resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", (run_dir / "report.html").as_uri())
    with Image.open(shot) as png:
        assert png.size == (1280, 2000)
        assert len(np.unique(np.asarray(png.convert("L")))) > 8  # not a blank page


def test_pareto_front_keeps_only_undominated_points():
    from vlprune.report.run_report import pareto_front

    points = [(1.0, 0.5), (2.0, 0.9), (2.0, 0.6), (3.0, 0.9), (0.5, 0.2)]
    assert sorted(pareto_front(points)) == [0, 1, 4]


def test_report_of_a_directory_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
