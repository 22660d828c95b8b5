"""Does balancing the scene-supervision loss teach the toy towers shape? Written to docs/results/scene-loss.md +
.json; every number in them comes from one run of this script:

    .venv/bin/python scripts/results_scene_loss.py            # ~70 min on 2 CPU cores (runs are resumed)
    .venv/bin/python scripts/results_scene_loss.py --quick    # tiny counts, to check the pipeline

The shipped toy-clip's image tokens carry colour and size but barely shape, and its embeddings bind shape near
chance (docs/results.md). ``vlprune.train.scene`` averages its cell loss over all 16 cells, 12-14 of them empty, so an
object's shape is about 2 % of the scene loss; ``--scene-loss balanced`` weighs occupied and empty cells (positive
and negative target entries) equally. Three settings, each with the shipped loss (``mean``) and the balanced one,
then a fourth:

* ``scene only, from scratch``: the image tower learns from the scene probes alone (no ITC) — perception;
* ``ITC + scene, from toy-clip``: the bundled chain's stage 1b recipe continued from the shipped toy-clip —
  whether perception reaches the embedding under ITC (retrieval, binding);
* ``ITC + scene, from scratch``: the chain's stage 1a recipe (32 scenes + one twin each, lr 1e-3), shortened —
  which loss the chain should start with;
* ``ITC + scene, after scene only`` (balanced): the same, started from the balanced scene-only run — does
  perception learnt first survive ITC? (It has had the scene-only steps more: not a matched budget.)

Each model is scored by the cell probe (``vlprune.eval.cell_probe``: linear read-out of each occupied cell's
colour / shape / size from its pooled patch tokens), and the ITC runs by retrieval and attribute binding.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch

import vlprune
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.binding import binding_accuracy
from vlprune.eval.cell_probe import cell_probe_accuracy
from vlprune.eval.evaluate import evaluate
from vlprune.models.io import weights_sha256
from vlprune.train.recipe import train
from vlprune.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _scores(model_dir: str, args, retrieval: bool) -> dict[str, float]:
    model, tokenizer = vlprune.load(model_dir), vlprune.load_tokenizer("toy-clip")
    row = cell_probe_accuracy(model, ToyWorld("train"), ToyWorld("val"), args.probe_count, args.count)
    if retrieval:
        metrics = evaluate(model, tokenizer, "retrieval", f"toyworld:val:{args.count}")["metrics"]
        row.update({"IR@1": metrics["image_retrieval_recall@1"], "TR@1": metrics["text_retrieval_recall@1"]})
        row.update(binding_accuracy(model, tokenizer, ToyWorld("val"), args.count))
    return row


def runs(args) -> list[dict]:
    rows = [{"setting": "shipped toy-clip (start of the ITC runs)", "scene loss": "mean", "steps": 0,
             **_scores("toy-clip", args, retrieval=True)}]
    for loss in ("mean", "balanced"):
        schedule = TrainConfig(steps=args.scene_steps, batch_size=32, lr=2e-3, warmup_steps=min(50, args.scene_steps),
                               seed=0, ckpt_every=args.scene_steps, log_every=20)
        final = train("toy-clip", args.runs / f"scene-only-{loss}", {"scene": 1.0}, schedule, scene_loss=loss)
        rows.append({"setting": "scene only, from scratch", "scene loss": loss, "steps": args.scene_steps,
                     **_scores(str(final), args, retrieval=False)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    for loss in ("mean", "balanced"):
        schedule = TrainConfig(steps=args.itc_steps, batch_size=16, lr=5e-4, warmup_steps=min(50, args.itc_steps),
                               seed=0, ckpt_every=args.itc_steps, log_every=20)
        final = train("toy-clip", args.runs / f"itc-scene-{loss}", {"itc": 1.0, "scene": 1.0}, schedule,
                      init_from="toy-clip", twins=3, scene_loss=loss)
        rows.append({"setting": "ITC + scene, from toy-clip", "scene loss": loss, "steps": args.itc_steps,
                     **_scores(str(final), args, retrieval=True)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    stage_1a = TrainConfig(steps=args.scratch_steps, batch_size=32, lr=1e-3,
                           warmup_steps=min(200, args.scratch_steps // 3), seed=0, ckpt_every=100, log_every=20)
    for loss in ("mean", "balanced"):
        final = train("toy-clip", args.runs / f"itc-scene-scratch-{loss}", {"itc": 1.0, "scene": 1.0}, stage_1a,
                      twins=1, scene_loss=loss)
        rows.append({"setting": "ITC + scene, from scratch", "scene loss": loss, "steps": args.scratch_steps,
                     **_scores(str(final), args, retrieval=True)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    final = train("toy-clip", args.runs / "itc-scene-after-scene-only-balanced", {"itc": 1.0, "scene": 1.0}, stage_1a,
                  init_from=str(args.runs / "scene-only-balanced" / "model"), twins=1, scene_loss="balanced")
    rows.append({"setting": "ITC + scene, after scene only", "scene loss": "balanced",
                 "steps": f"{args.scene_steps} + {args.scratch_steps}", **_scores(str(final), args, retrieval=True)})
    print(f"[scene-loss] {rows[-1]}", flush=True)
    return rows


def table(columns: list[str], rows: list[dict]) -> list[str]:
    """Markdown table lines: floats to 3 decimals, a missing value as a dash."""
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else "—" if value is None else str(value)

    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]]


def page(title: str, stem: str, payload: dict, prose: str, columns: list[str]) -> str:
    """A results page: title, where it comes from, machine and settings, the prose, the table of rows."""
    script = Path(__file__).parent / f"results_{stem.replace('-', '_')}.py"
    return "\n".join([f"# {title}", "", f"Written by `scripts/{script.name}` (raw values in `{stem}.json`); never "
                      "edited by hand.", "", f"Machine: {payload['machine']}. Settings: {payload['settings']}.", "",
                      prose, "", *table(columns, payload["rows"]), ""])


def render(payload: dict) -> str:
    columns = ["setting", "scene loss", "steps", "probe_colour", "probe_shape", "probe_shape_small", "probe_shape_big",
               "probe_size", "IR@1", "TR@1", "binding_colour", "binding_shape", "binding_size", "binding_cell"]

    n = payload["settings"]["count"]
    return page("Scene-supervision loss: mean vs balanced", "scene-loss", payload, (
        "`probe_*`: accuracy of a linear read-out of each occupied cell's attribute from its pooled final patch "
        f"tokens (`vlprune.eval.cell_probe`; fit on {payload['settings']['probe_count']} train scenes, scored on "
        f"{n} val scenes; chance 0.125 colour, 0.2 shape, 0.5 size). IR@1 / TR@1: retrieval on {n} val pairs. "
        "`binding_*`: how often a caption scores its own image above its twin's (`vlprune.eval.binding`; chance "
        "0.5). Scene-only runs train the image tower with the scene probes alone (lr 2e-3, 32 scenes); ITC runs "
        "continue the shipped toy-clip with the bundled chain's stage-1b recipe (ITC + scene, 16 scenes x 4 "
        "variants, lr 5e-4); from-scratch ITC runs use stage 1a's (32 scenes x 2 variants, lr 1e-3); the "
        "after-scene-only run is that recipe started from the balanced scene-only model (its steps: scene-only + "
        "ITC)."), columns)


def page_arguments(parser: argparse.ArgumentParser, stem: str, runs: bool = True) -> None:
    """The options every results page takes: --threads, --out and (for pages that train) --runs."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    if runs:
        parser.add_argument("--runs", type=Path, default=ROOT / "runs" / stem, help="training runs (resumed)")


def write_page(args, stem: str, runs: Callable, render: Callable[[dict], str],
               models: tuple[str, ...] = ("toy-clip",)) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-steps", type=int, default=600, help="steps of each scene-only run from scratch")
    parser.add_argument("--itc-steps", type=int, default=300, help="steps of each ITC + scene run from toy-clip")
    parser.add_argument("--scratch-steps", type=int, default=600,
                        help="steps of each ITC + scene run from scratch (stage 1a's recipe, warm-up a third of it "
                             "up to 200)")
    parser.add_argument("--count", type=int, default=1000, help="validation scenes / pairs")
    parser.add_argument("--probe-count", type=int, default=2000, help="train scenes the cell probe is fit on")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the pipeline, numbers mean little")
    page_arguments(parser, "scene-loss")
    args = parser.parse_args()
    if args.quick:
        args.scene_steps, args.itc_steps, args.scratch_steps, args.count, args.probe_count = 2, 2, 3, 40, 60
    write_page(args, "scene-loss", runs, render)


if __name__ == "__main__":
    main()
