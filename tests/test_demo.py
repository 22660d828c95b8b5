"""The demo on the bundled models: one table, results.json and a self-contained report.html."""

import json
import re

import pytest

from vlprune.cli import main
from vlprune.reduce.budget import VARIANTS
from vlprune.registry import bundled_dir

pytestmark = pytest.mark.skipif(not (bundled_dir("toy-clip") and bundled_dir("toy-fusion")),
                                reason="bundled models not trained yet (scripts/train_bundled.sh)")


def test_demo_writes_table_results_and_report(tmp_path, capsys):
    from vlprune.demo import run_demo

    rows = run_demo(tmp_path, count=24, method_count=12)
    printed = capsys.readouterr().out
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


def test_pareto_front_keeps_only_undominated_points():
    from vlprune.report.run_report import pareto_front

    points = [(1.0, 0.5), (2.0, 0.9), (2.0, 0.6), (3.0, 0.9), (0.5, 0.2)]
    assert sorted(pareto_front(points)) == [0, 1, 4]


def test_report_of_a_directory_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
