"""No code path can unpickle: weights are safetensors, configs and metadata JSON."""

import re
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "src" / "vlprune").rglob("*.py"))
UNSAFE = re.compile(r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.loads?\(|\btorch\.load\(|\bjoblib\b|"
                    r"\bdill\b|\bnp\.load\([^)]*allow_pickle\s*=\s*True|\bcloudpickle\b|\bmarshal\.loads?\(")


def test_the_package_has_sources_to_scan():
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_no_unpickling_call_in_the_package(path):
    hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if UNSAFE.search(line) and not line.lstrip().startswith("#")]
    assert not hits, f"unpickling code in the package: {hits}"


def test_the_scanner_catches_what_it_should():
    for line in ("import pickle", "state = torch.load(path)", "np.load(f, allow_pickle=True)", "pickle.loads(b)"):
        assert UNSAFE.search(line), line
    for line in ("from safetensors.torch import load_file", "json.loads(text)", "np.load(f)"):
        assert not UNSAFE.search(line), line
