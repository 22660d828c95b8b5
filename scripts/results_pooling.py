"""Mean-pooled vs [CLS]-pooled toy-clip: does projecting the mean of the patch tokens (``VisionConfig.pool='mean'``)
instead of the final [CLS] token lift retrieval? Writes docs/results/pooling.{md,json}.

    .venv/bin/python scripts/results_pooling.py            # about 25 minutes on 2 CPU cores (runs are resumed)

Hypothesis: the shipped toy-clip's patch tokens know colour, size and (for big objects) shape, but its [CLS]
embedding binds little beyond colour and size (docs/results.md, "What limits retrieval"). A mean of the patch tokens
is a bag of per-object features, so ITC's gradient reaches every token without going through [CLS] attention.
The mean-pooled runs repeat the balanced rows of ``scripts/results_scene_loss.py`` exactly (same recipe, seed and
counts) with only the pooling changed; the [CLS] rows are read from docs/results/scene-loss.json, and refused if
that page was written for other settings or other toy-clip weights.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import vlprune
from vlprune.experiments.pages import page, page_arguments, write_page
from vlprune.experiments.toy_scores import toy_clip_scores
from vlprune.models.io import weights_sha256
from vlprune.registry import toy_clip
from vlprune.train.recipe import train
from vlprune.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCENE_LOSS = ROOT / "docs" / "results" / "scene-loss.json"


@vlprune.register_model
def toy_clip_gap() -> vlprune.ModelConfig:
    """toy-clip with the image embedding projected from the mean of the final patch tokens."""
    config = toy_clip()
    return replace(config, vision=replace(config.vision, pool="mean"), name="toy-clip-gap")


def _mean_pooled_toy_clip(directory: Path) -> Path:
    """The shipped toy-clip's weights under toy-clip-gap's config (the weights do not depend on the pooling)."""
    if not (directory / "model.safetensors").is_file():
        model = vlprune.build_model(toy_clip_gap())
        model.load_state_dict(vlprune.load("toy-clip").state_dict())
        vlprune.save(model, directory, vlprune.load_tokenizer("toy-clip"))
    return directory


def _cls_rows(args) -> dict[str, dict]:
    payload = json.loads(SCENE_LOSS.read_text())
    settings, wanted = payload["settings"], {"itc_steps": args.itc_steps, "scratch_steps": args.scratch_steps,
                                             "count": args.count, "probe_count": args.probe_count}
    differ = {k: (settings.get(k), v) for k, v in wanted.items() if settings.get(k) != v}
    if differ or payload["model_sha256"]["toy-clip"] != weights_sha256("toy-clip"):
        raise SystemExit(f"{SCENE_LOSS} was written for other settings {differ} or other toy-clip weights; re-run "
                         "scripts/results_scene_loss.py first")
    rows = {r["setting"]: r for r in payload["rows"] if r["scene loss"] == "balanced"}
    return {"from scratch": rows["ITC + scene, from scratch"], "from toy-clip": rows["ITC + scene, from toy-clip"]}


def runs(args) -> list[dict]:
    cls = _cls_rows(args)
    scratch = TrainConfig(steps=args.scratch_steps, batch_size=32, lr=1e-3,
                          warmup_steps=min(200, args.scratch_steps // 3), seed=0, ckpt_every=100, log_every=20)
    final = train("toy-clip-gap", args.runs / "itc-scene-scratch-mean-pool", {"itc": 1.0, "scene": 1.0}, scratch,
                  twins=1, scene_loss="balanced")
    rows = [{"start": "from scratch", "pool": "cls", **cls["from scratch"]},
            {"start": "from scratch", "pool": "mean", "steps": args.scratch_steps,
             **toy_clip_scores(str(final), args.count, args.probe_count, True)}]
    print(f"[pooling] {rows[-1]}", flush=True)
    further = TrainConfig(steps=args.itc_steps, batch_size=16, lr=5e-4, warmup_steps=min(50, args.itc_steps), seed=0,
                          ckpt_every=100, log_every=20)
    init = _mean_pooled_toy_clip(args.runs / "toy-clip-mean-pooled")
    final = train(str(init), args.runs / "itc-scene-from-toy-clip-mean-pool", {"itc": 1.0, "scene": 1.0}, further,
                  twins=3, scene_loss="balanced")
    rows += [{"start": "from toy-clip", "pool": "cls", **cls["from toy-clip"]},
             {"start": "from toy-clip", "pool": "mean", "steps": args.itc_steps,
              **toy_clip_scores(str(final), args.count, args.probe_count, True)}]
    print(f"[pooling] {rows[-1]}", flush=True)
    return rows


def render(payload: dict) -> str:
    columns = ["start", "pool", "steps", "IR@1", "TR@1", "binding_colour", "binding_shape", "binding_size",
               "binding_cell", "probe_shape", "probe_shape_small", "probe_shape_big"]

    n = payload["settings"]["count"]
    return page("Image pooling: [CLS] vs mean of the patch tokens", "pooling", payload, (
        "toy-clip with the image embedding projected from the final [CLS] token (`pool=cls`, as shipped) or from the "
        "mean of the final patch tokens (`pool=mean`, `VisionConfig.pool`), trained with ITC + the balanced scene "
        "loss: from scratch with the bundled chain's stage-1a recipe (32 scenes x 2 variants, lr 1e-3), or "
        "continuing the shipped toy-clip's weights with stage 1b's (16 scenes x 4 variants, lr 5e-4). The [CLS] rows "
        "are the balanced rows of [scene-loss.md](scene-loss.md), same recipe, seed and counts. "
        f"IR@1 / TR@1: retrieval on {n} val pairs; `binding_*`: a caption against its twin (chance 0.5); "
        "`probe_shape*`: the cell probe on the final patch tokens (chance 0.2)."), columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--itc-steps", type=int, default=300, help="steps continuing toy-clip")
    parser.add_argument("--scratch-steps", type=int, default=600, help="steps from scratch")
    parser.add_argument("--count", type=int, default=1000, help="validation scenes / pairs")
    parser.add_argument("--probe-count", type=int, default=2000, help="train scenes the cell probe is fit on")
    page_arguments(parser, ROOT / "docs" / "results", ROOT / "runs" / "pooling")
    args = parser.parse_args()
    write_page(args, "pooling", runs, render)


if __name__ == "__main__":
    main()
