"""MoPE cost table of a tiny model, written as JSON; run alone or under ``torchrun`` (modules shared over ranks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vlprune  # noqa: E402
from helpers.tiny import tiny_clip_config  # noqa: E402
from vlprune import distributed as D  # noqa: E402
from vlprune.data.toyworld import ToyWorld, toy_tokenizer  # noqa: E402
from vlprune.structured.importance import mope_table  # noqa: E402
from vlprune.structured.towers import Pairs  # noqa: E402


def table(tower: str) -> dict:
    torch.manual_seed(0)
    model = vlprune.build_model(tiny_clip_config(vision={"num_layers": 3})).eval()
    batches = Pairs.from_world(ToyWorld("val", image_size=32), 24, toy_tokenizer(), model).batches(10)
    result = mope_table(model, tower, batches, groups=4).to_dict()
    return {k: result[k] for k in ("heads", "neuron_groups", "layers")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    D.init_distributed("gloo")
    result = table("vision")
    if D.rank() == 0:
        Path(args.out).write_text(json.dumps(result))
    D.shutdown()


if __name__ == "__main__":
    main()
