"""Every results page that a script renders from its JSON re-renders byte-identically from the committed JSON
(nothing in the Markdown was typed by hand or left behind by an older renderer)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"scene-loss": "results_scene_loss", "pooling": "results_pooling", "grounding": "results_grounding",
         "text-binding": "results_text_binding"}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PACKAGE_PAGES = {"smarttrim": "vlprune.experiments.smarttrim_page",
                 "token-reduction": "vlprune.experiments.token_reduction_page"}


def _render(stem: str):
    if stem in PAGES:
        return _script(PAGES[stem]).render
    return importlib.import_module(PACKAGE_PAGES[stem]).render


@pytest.mark.parametrize("stem", sorted({**PAGES, **PACKAGE_PAGES}))
def test_page_rerenders_from_its_json(stem):
    payload = json.loads((ROOT / "docs" / "results" / f"{stem}.json").read_text())
    assert _render(stem)(payload) == (ROOT / "docs" / "results" / f"{stem}.md").read_text()


def test_no_script_imports_another_scripts_names():
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    for path in (ROOT / "scripts").glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["from"], ["import"]) and len(words) > 1:
                assert words[1].split(".")[0] not in scripts, f"{path.name}: {line}"
