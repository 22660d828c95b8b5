"""The demo on the bundled models: one table, results.json and a self-contained report.html."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlprune.cli import main
from vlprune.reduce.budget import VARIANTS
from vlprune.registry import bundled_dir

pytestmark = pytest.mark.skipif(not (bundled_dir("toy-clip") and bundled_dir("toy-fusion")),
                                reason="bundled models not trained yet (scripts/train_bundled.sh)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One small demo run (24 pairs; 12 per method) shared by the tests of this file."""
    from vlprune.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    rows = run_demo(out, count=24, method_count=12)
    return out, rows


def test_demo_writes_table_results_and_report(demo_run, capsys):
    tmp_path, rows = demo_run
    printed = (tmp_path / "table.txt").read_text()
    assert [(r["model"], r["task"]) for r in rows[:4]] == [("toy-clip", "retrieval"), ("toy-clip", "zeroshot"),
                                                            ("toy-fusion", "retrieval"), ("toy-fusion", "vqa")]
    assert [r["method"] for r in rows[4:]][:1] == ["base"] and len(rows) == 4 + 1 + len(VARIANTS)
    base_gflops = rows[4]["vision_gflops"]
    assert all(abs(r["vision_gflops"] / base_gflops - 0.7) < 0.02 for r in rows[5:])  # matched at a 30 % cut
    assert "vision_gflops" in printed.splitlines()[0] and "ideal speedup" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["base"][0]["metrics"]["image_retrieval_recall@1"] <= 1.0
    assert results["base"][3]["metrics"]["questions"] == 24
    page = (tmp_path / "report.html").read_text()
    assert page.count("<table>") == 2 and page.count("<tr>") == 5 + 1 + 1 + len(VARIANTS)
    assert "Accuracy vs analytic image-tower GFLOPs" in page and "Token-keep maps" in page
    (tmp_path / "report.html").unlink()
    assert main(["report", str(tmp_path)]) == 0 and (tmp_path / "report.html").read_text() == page
    images = re.findall(r'src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


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


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package chromium; "
                                               ".ci/run installs it)")
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    """Every embedded plot decodes in a real browser and both tables are there; the screenshot is kept
    (``VLPRUNE_SCREENSHOT`` names where, e.g. docs/report.png)."""
    run_dir, _ = demo_run
    page = (run_dir / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _CHECK + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri())
    found = re.search(r"images=(\d+) broken=(\d+) tables=(\d+)", dom)
    assert found, "the check script did not run in Chromium"
    images, broken, tables = map(int, found.groups())
    assert images == page.count("<img") and images >= 3 and broken == 0 and tables == 2
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
