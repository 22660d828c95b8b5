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
from pathlib import Path

from vlprune.experiments.pages import page, page_arguments, write_page
from vlprune.experiments.toy_scores import toy_clip_scores
from vlprune.train.recipe import train
from vlprune.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def runs(args) -> list[dict]:
    rows = [{"setting": "shipped toy-clip (start of the ITC runs)", "scene loss": "mean", "steps": 0,
             **toy_clip_scores("toy-clip", args.count, args.probe_count, True)}]
    for loss in ("mean", "balanced"):
        schedule = TrainConfig(steps=args.scene_steps, batch_size=32, lr=2e-3, warmup_steps=min(50, args.scene_steps),
                               seed=0, ckpt_every=args.scene_steps, log_every=20)
        final = train("toy-clip", args.runs / f"scene-only-{loss}", {"scene": 1.0}, schedule, scene_loss=loss)
        rows.append({"setting": "scene only, from scratch", "scene loss": loss, "steps": args.scene_steps,
                     **toy_clip_scores(str(final), args.count, args.probe_count, False)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    for loss in ("mean", "balanced"):
        schedule = TrainConfig(steps=args.itc_steps, batch_size=16, lr=5e-4, warmup_steps=min(50, args.itc_steps),
                               seed=0, ckpt_every=args.itc_steps, log_every=20)
        final = train("toy-clip", args.runs / f"itc-scene-{loss}", {"itc": 1.0, "scene": 1.0}, schedule,
                      init_from="toy-clip", twins=3, scene_loss=loss)
        rows.append({"setting": "ITC + scene, from toy-clip", "scene loss": loss, "steps": args.itc_steps,
                     **toy_clip_scores(str(final), args.count, args.probe_count, True)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    stage_1a = TrainConfig(steps=args.scratch_steps, batch_size=32, lr=1e-3,
                           warmup_steps=min(200, args.scratch_steps // 3), seed=0, ckpt_every=100, log_every=20)
    for loss in ("mean", "balanced"):
        final = train("toy-clip", args.runs / f"itc-scene-scratch-{loss}", {"itc": 1.0, "scene": 1.0}, stage_1a,
                      twins=1, scene_loss=loss)
        rows.append({"setting": "ITC + scene, from scratch", "scene loss": loss, "steps": args.scratch_steps,
                     **toy_clip_scores(str(final), args.count, args.probe_count, True)})
        print(f"[scene-loss] {rows[-1]}", flush=True)
    final = train("toy-clip", args.runs / "itc-scene-after-scene-only-balanced", {"itc": 1.0, "scene": 1.0}, stage_1a,
                  init_from=str(args.runs / "scene-only-balanced" / "model"), twins=1, scene_loss="balanced")
    rows.append({"setting": "ITC + scene, after scene only", "scene loss": "balanced",
                 "steps": f"{args.scene_steps} + {args.scratch_steps}",
                 **toy_clip_scores(str(final), args.count, args.probe_count, True)})
    print(f"[scene-loss] {rows[-1]}", flush=True)
    return rows


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
    page_arguments(parser, ROOT / "docs" / "results", ROOT / "runs" / "scene-loss")
    args = parser.parse_args()
    if args.quick:
        args.scene_steps, args.itc_steps, args.scratch_steps, args.count, args.probe_count = 2, 2, 3, 40, 60
    write_page(args, "scene-loss", runs, render)


if __name__ == "__main__":
    main()
