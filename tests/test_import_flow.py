"""Imports flow one way: every module of src/vlprune imports only packages at or below its own layer.

Read from the source with ``ast`` (imports inside functions included), so an import that only runs on one code path
still counts. A new top-level module or package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[tuple[str, ...], ...] = (
    # plain data types, name tables; torch-only helpers: rank / all-gather (distributed), retrieval recall (retrieval)
    ("config", "tokenizer", "tokenizer_adapters", "method_registry", "distributed", "retrieval"),
    ("data",),
    ("registry",),  # bundled architectures: the toy models take their vocabulary and answers from the toy world
    ("models",),  # including models.flops, the analytic FLOP model the methods count with, and the ITC loss
    ("reduce", "trim", "structured"),  # the methods; their training runs live in train, their evaluation in eval
    ("train",),
    ("eval",),
    ("report", "experiments"),
    ("demo", "cli", ""),  # "": vlprune/__init__.py, the public API
)
"""Lowest first; a module may import its own layer and the layers before it."""

EXCEPTIONS: dict[tuple[str, str], str] = {}
"""(importer, imported module) -> why: the only arrows allowed to point up the layers."""


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: top-level name {top!r} has no layer in tests/test_import_flow.py LAYERS")


def _source_modules() -> dict[str, str]:
    """Module name -> source text of every module under src/vlprune (a package as ``pkg.__init__``)."""
    out = {}
    for path in sorted((SRC / "vlprune").rglob("*.py")):
        out[".".join(path.relative_to(SRC).with_suffix("").parts)] = path.read_text(encoding="utf-8")
    return out


def _name(key: str) -> str:
    return key.removesuffix(".__init__")


def imports(key: str, source: str, known: set[str]) -> list[tuple[str, int]]:
    """The vlprune modules ``key`` (a module name; a package as ``pkg.__init__``) imports, with line numbers; a
    name imported from a module resolves to that module, one imported from a package to the submodule when it is
    one."""
    package = key.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name == "vlprune" or name.startswith("vlprune."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                found.append((name, node.lineno))
    return found


def violations(sources: dict[str, str], exceptions: dict[tuple[str, str], str]) -> list[str]:
    known = {_name(key) for key in sources}
    out = []
    for key, source in sources.items():
        importer = _name(key)
        for target, line in sorted(set(imports(key, source, known))):
            if _layer(target) > _layer(importer) and (importer, target) not in exceptions:
                out.append(f"{importer} (line {line}) imports {target}, a higher layer")
    return out


def test_every_import_flows_down_the_layers():
    assert violations(_source_modules(), EXCEPTIONS) == []


def test_every_exception_is_still_needed():
    sources = _source_modules()
    known = {_name(key) for key in sources}
    used = {(_name(key), target) for key, source in sources.items() for target, _ in imports(key, source, known)}
    assert sorted(set(EXCEPTIONS) - used) == []


def test_every_top_level_module_has_a_layer():
    for key in _source_modules():
        _layer(_name(key))


@pytest.mark.parametrize("source", [
    "from vlprune.eval.evaluate import evaluate\n",
    "def f():\n    from vlprune.eval import evaluate\n    return evaluate\n",
    "import vlprune.train.trainer\n",
    "from ..eval import vqa\n",
])
def test_an_import_up_the_layers_is_refused(source):
    sources = _source_modules()
    sources["vlprune.models.added"] = source
    found = [v for v in violations(sources, EXCEPTIONS) if v.startswith("vlprune.models.added ")]
    assert len(found) == 1 and "a higher layer" in found[0]
