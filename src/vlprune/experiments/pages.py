"""Results pages: the one Markdown table writer, the page layout, and the write step every results script shares.

A page is ``docs/results/STEM.json`` (machine, settings, the SHA-256 of the bundled models it measured, rows)
plus ``STEM.md`` rendered from it by the script's ``render(payload)``; ``tests/test_pages.py`` re-renders every
committed page from its JSON and requires the same bytes.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from vlprune.models.io import weights_sha256


def cell(value: object) -> str:
    """A table cell: floats to 3 decimals (thousands as whole numbers), a missing value as a dash."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "—" if value is None else str(value)


def table(columns: list[str], rows: list[dict]) -> list[str]:
    """Markdown table lines of ``rows`` (dicts) in ``columns``."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]]


def page(title: str, stem: str, payload: dict, prose: str, columns: list[str]) -> str:
    """A results page: title, the script that writes it, machine and settings, the prose, the table of rows."""
    script = f"results_{stem.replace('-', '_')}.py"
    return "\n".join([f"# {title}", "", f"Written by `scripts/{script}` (raw values in `{stem}.json`); never "
                      "edited by hand.", "", f"Machine: {payload['machine']}. Settings: {payload['settings']}.", "",
                      prose, "", *table(columns, payload["rows"]), ""])


def page_arguments(parser: argparse.ArgumentParser, out: Path, runs: Path | None = None) -> None:
    """The options every results page takes: --threads, --out and (for pages that train) --runs."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=out)
    if runs is not None:
        parser.add_argument("--runs", type=Path, default=runs, help="training runs (resumed)")


def write_page(args: argparse.Namespace, stem: str, runs: Callable[[argparse.Namespace], list[dict]],
               render: Callable[[dict], str], models: tuple[str, ...] = ("toy-clip",)) -> None:
    """Run ``runs(args)`` and write ``args.out / stem`` .json (machine, settings, the SHA-256 of the bundled
    ``models`` it measures, rows) and .md."""
    torch.set_num_threads(args.threads)
    payload = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "python": platform.python_version()},
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
               "model_sha256": {name: weights_sha256(name) for name in models}}
    payload["rows"] = runs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(render(payload))
    print(f"wrote {args.out / f'{stem}.json'} and {args.out / f'{stem}.md'}")
