"""Train a tiny CLIP with the real ITC objective on the toy world, for tests/test_ddp_itc.py: run directly or
under ``torchrun``; every rank writes its final weights to ``OUT/final-rank{r}.safetensors``.

``--dtype float64`` trains in double precision (model and batches). The key biases of attention get a gradient
that is exactly zero in exact arithmetic (softmax is shift-invariant), so in float32 it is pure rounding noise
(~1e-10), which AdamW turns into updates of about lr * noise / eps; float64 keeps that noise far below the
tolerance of an exact-equivalence test."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

if __package__ in (None, ""):  # run as a script: make ``helpers`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.tiny import tiny_clip_config  # noqa: E402
from vlprune import build_model  # noqa: E402
from vlprune import distributed as D  # noqa: E402
from vlprune.data.pairs import Collate, ToyPairs  # noqa: E402
from vlprune.data.toyworld import ToyWorld, toy_tokenizer  # noqa: E402
from vlprune.train import TrainConfig, Trainer, seed_everything  # noqa: E402
from vlprune.train.objectives import Objective  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_model(dtype: torch.dtype = torch.float32):
    seed_everything(0)
    return build_model(tiny_clip_config()).to(dtype)


class CastCollate(Collate):
    """The toy-world collate with floating tensors cast to the model's dtype."""

    def __init__(self, tokenizer, vision, dtype: torch.dtype):
        super().__init__(tokenizer, vision)
        self.dtype = dtype

    def __call__(self, items):
        batch = super().__call__(items)
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in batch.items()}


def make_config(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1, log_every=1, ckpt_every=1000)


def run(out: str | Path, steps: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Train and return the final state dict (also what the script saves)."""
    model = make_model(dtype)
    dataset = ToyPairs(ToyWorld("train", image_size=32, size=64))
    collate = CastCollate(toy_tokenizer(), model.config.vision, dtype)
    trainer = Trainer(model, Objective({"itc": 1.0}), dataset, collate, make_config(steps), out, device="cpu",
                      progress=False)
    trainer.fit()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    state = run(args.out, args.steps, DTYPES[args.dtype])
    save_file(state, str(Path(args.out) / f"final-rank{D.rank()}.safetensors"))
    D.shutdown()


if __name__ == "__main__":
    main()
