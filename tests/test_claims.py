"""The claims machinery: runs keyed by spec and weights and never recomputed, the committed claims page
re-rendered byte-identically from its JSON, every claim of the claims file with the issue's fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vlprune.experiments.runs as runs
from vlprune.experiments.claims import CLAIM_FIELDS, claims, render, stale_claims, stale_pages
from vlprune.experiments.runs import EvalSpec, run_eval
from vlprune.models.io import weights_sha256

RESULTS = Path(__file__).parent.parent / "docs" / "results"


def test_a_run_is_computed_once_and_keyed_by_its_weights(tmp_path, monkeypatch):
    spec = EvalSpec("toy-clip", "retrieval", "toyworld:val:40", "evit:keep_ratio=0.7", rerank_k=0)
    first = run_eval(spec, tmp_path)
    assert len(first["metrics"]["per_item"]["image_retrieval_hit@1"]) == 40
    monkeypatch.setattr(runs, "load", lambda *a: pytest.fail("a finished run was recomputed"))
    assert run_eval(spec, tmp_path) == first
    assert spec.key("a" * 64) != spec.key("b" * 64)  # other weights, another run
    assert EvalSpec("toy-clip", "retrieval", "toyworld:val:41", rerank_k=0).key("a") != spec.key("a")


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="task"):
        EvalSpec("toy-clip", "zeroshot", "toyworld:val:10")
    with pytest.raises(ValueError, match="COUNT"):
        EvalSpec("toy-clip", "retrieval", "toyworld:val:0")


def test_committed_claims_page_rerenders_from_its_json():
    entries = json.loads((RESULTS / "claims.json").read_text())
    assert render(entries) == (RESULTS / "claims.md").read_text()


def test_claims_file_has_every_claim_with_the_fields_and_an_interval_or_what_it_needs():
    entries = {e["id"]: e for e in json.loads((RESULTS / "claims.json").read_text())}
    assert set(entries) == {c.id for c in claims()}
    for entry in entries.values():
        assert set(CLAIM_FIELDS) <= entry.keys(), entry["id"]
        if entry["verdict"] == "not measured":
            assert entry["needs"], entry["id"]
        else:
            assert entry["ci_low"] <= entry["difference"] <= entry["ci_high"] and entry["items"] == 5000
            assert entry["verdict"] in ("reproduced", "refuted", "inconclusive")


def test_check_reports_a_claim_measured_on_other_weights(tmp_path):
    entries = json.loads((RESULTS / "claims.json").read_text())
    measured = next(e for e in entries if e["verdict"] != "not measured")
    measured["weights_sha256"] = ["0" * 64]
    (tmp_path / "claims.json").write_text(json.dumps(entries))
    (tmp_path / "claims.md").write_text(render(entries))
    assert any("other weights" in p and measured["id"] in p for p in stale_claims(tmp_path))
    ids = {e["id"] for e in entries}
    committed = stale_claims(RESULTS)  # the committed claims match the shipped weights (pages may lag: listed)
    assert not [p for p in committed if p.split(":")[0] in ids or "claims" in p]


def test_a_page_measured_on_other_weights_is_stale(tmp_path):
    (tmp_path / "page.json").write_text(json.dumps({"model_sha256": {"toy-clip": "0" * 64}, "rows": []}))
    (tmp_path / "fresh.json").write_text(json.dumps({"model_sha256": {"toy-clip": weights_sha256("toy-clip")}}))
    assert stale_pages(tmp_path) == [f"{tmp_path / 'page.md'}: measured on other toy-clip weights than the shipped "
                                     "ones (re-run its script)"]
