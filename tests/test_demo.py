"""The demo on the bundled models: one table, results.json and a self-contained report.html."""

import json
import re

import pytest

from vlprune.registry import bundled_dir

pytestmark = pytest.mark.skipif(not (bundled_dir("toy-clip") and bundled_dir("toy-fusion")),
                                reason="bundled models not trained yet (scripts/train_bundled.sh)")


def test_demo_writes_table_results_and_report(tmp_path, capsys):
    from vlprune.demo import run_demo

    rows = run_demo(tmp_path, count=24)
    printed = capsys.readouterr().out
    assert [(r["model"], r["task"]) for r in rows] == [("toy-clip", "retrieval"), ("toy-clip", "zeroshot"),
                                                        ("toy-fusion", "retrieval"), ("toy-fusion", "vqa")]
    assert "vision_gflops" in printed.splitlines()[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results[0]["metrics"]["image_retrieval_recall@1"] <= 1.0
    assert results[3]["metrics"]["questions"] == 24
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and page.count("<tr>") == 5
    images = re.findall(r'src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
