"""Fast MoPE vs the naive full re-evaluation: same scores, wall-clock of each.

Two models: the bundled ``toy-clip`` on toy-world val pairs, and a random 12-layer width-768 CLIP (ViT-B/16
shapes at 112 px: 49 patches + [CLS]; 12-layer width-512 text tower) where the naive way is slow. Both ways score
the same modules — ``--modules`` spread evenly over the layers, cycling head / neuron group / layer — so the
ratio is representative of a whole cost table. Each tower is timed: the vision tower saves the text pass and on
average half of its own layers; the text tower saves the (costlier) vision pass.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mope_speed.py --out docs/results/mope_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import vlprune
from vlprune.data.toyworld import ToyWorld, toy_tokenizer
from vlprune.models.io import Model
from vlprune.registry import model_config
from vlprune.structured.importance import KINDS, Module, modules, mope_scores
from vlprune.structured.rewire import rewire, taylor_importance
from vlprune.structured.towers import Batch, Pairs
from vlprune.tokenizer import WordTokenizer


def spread(model: Model, tower: str, count: int, groups: int) -> list[Module]:
    """``count`` modules spread evenly over the layers, cycling through the kinds."""
    layers = len(modules(model, tower, ("layer",), groups))
    picked = []
    for i in range(count):
        layer, kind = i * layers // count, KINDS[i % len(KINDS)]
        picked.append(next(m for m in modules(model, tower, (kind,), groups) if m.layer == layer))
    return picked


def compare(model: Model, tower: str, batches: list[Batch], todo: list[Module], groups: int) -> dict:
    """Seconds of the naive and the fast way on the same modules, and whether the scores are equal."""
    timing, scores = {}, {}
    for way, fast in (("naive", False), ("fast", True)):
        start = time.perf_counter()
        scores[way], _ = mope_scores(model, tower, todo, batches, groups=groups, fast=fast)
        timing[way] = time.perf_counter() - start
    difference = max(abs(scores["fast"][m] - scores["naive"][m]) for m in todo)
    return {"tower": tower, "modules": len(todo), "pairs": sum(len(b["input_ids"]) for b in batches),
            "naive_seconds": timing["naive"], "fast_seconds": timing["fast"],
            "speedup": timing["naive"] / timing["fast"], "max_abs_difference": difference,
            "equal": difference == 0.0}


def wide_clip() -> Model:
    """Random CLIP with ViT-B/16 shapes at 112 px and the toy tokenizer's vocabulary."""
    config = model_config("vit-b16-clip")
    tokenizer = toy_tokenizer()
    text = dataclasses.replace(config.text, vocab_size=len(tokenizer), max_length=tokenizer.max_length)
    config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, image_size=112), text=text,
                                 name="random-width768-12layer")
    torch.manual_seed(0)
    return vlprune.build_model(config).eval()


def run(model: Model, tokenizer: WordTokenizer, pairs: int, count: int, groups: int, batch_size: int
        ) -> list[dict]:
    """Rewire (as the recipe does), then compare both ways on each tower."""
    world = ToyWorld("val", image_size=model.config.vision.image_size)
    batches = Pairs.from_world(world, pairs, tokenizer, model).batches(batch_size)
    rows = []
    for tower in ("vision", "text"):
        rewire(model, tower, taylor_importance(model, tower, batches[:1]).neurons)
        rows.append({"model": model.config.name, "vision_width": model.config.vision.width,
                     "layers": len(modules(model, tower, ("layer",), groups)),
                     **compare(model, tower, batches, spread(model, tower, count, groups), groups)})
    return rows


def speed_rows(model_name: str, pairs: int, count: int, wide_pairs: int, wide_count: int, groups: int) -> list[dict]:
    """The benchmark's rows: the bundled model, then the random width-768 CLIP."""
    return (run(vlprune.load(model_name), vlprune.load_tokenizer(model_name), pairs, count, groups, 50)
            + run(wide_clip(), toy_tokenizer(), wide_pairs, wide_count, groups, 16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-clip")
    parser.add_argument("--pairs", type=int, default=100, help="val pairs for toy-clip")
    parser.add_argument("--modules", type=int, default=24, help="modules scored on toy-clip")
    parser.add_argument("--wide-pairs", type=int, default=16, help="pairs for the width-768 model")
    parser.add_argument("--wide-modules", type=int, default=12, help="modules scored on the width-768 model")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = speed_rows(args.model, args.pairs, args.modules, args.wide_pairs, args.wide_modules, args.groups)
    for row in rows:
        print(f"{row['model']} {row['tower']}: {row['modules']} modules, {row['pairs']} pairs: "
              f"naive {row['naive_seconds']:.1f}s, "
              f"fast {row['fast_seconds']:.1f}s, speedup {row['speedup']:.2f}x, equal={row['equal']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        payload = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
