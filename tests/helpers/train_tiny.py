"""A tiny training run for tests/test_trainer.py: run directly or under ``torchrun``; every rank writes its
final weights to ``OUT/final-rank{r}.safetensors``.

``VLPRUNE_TEST_STEP_SLEEP`` (seconds) slows every objective call so a test can kill the run mid-way;
``VLPRUNE_TEST_STALL_RANK=r`` makes rank r stall for two minutes at step 2 (a hung peer).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vlprune import distributed as D
from vlprune.distributed import all_gather_with_grad
from vlprune.train import TrainConfig, TrainContext, Trainer, seed_everything

IN_DIM, OUT_DIM = 6, 3


def make_dataset(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed random (x, y) regression pairs."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, IN_DIM, generator=g)
    y = torch.randn(n, OUT_DIM, generator=g)
    return [(x[i], y[i]) for i in range(n)]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def make_model(dropout: float = 0.0) -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(IN_DIM, 16), nn.Tanh(), nn.Dropout(dropout), nn.LayerNorm(16),
                         nn.Linear(16, OUT_DIM))


def _delay(ctx: TrainContext) -> None:
    time.sleep(float(os.environ.get("VLPRUNE_TEST_STEP_SLEEP", "0")))
    if os.environ.get("VLPRUNE_TEST_STALL_RANK") == str(ctx.rank) and ctx.step == 2:
        time.sleep(120)


def mse_objective(model: nn.Module, batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
    _delay(ctx)
    x, y = batch
    loss = F.mse_loss(model(x), y)
    return {"loss": loss, "mse": loss.detach()}


def gather_objective(model: nn.Module, batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
    """Local MSE plus a contrastive term over the batch gathered from every rank (each rank's query rows)."""
    x, y = batch
    z = model(x)
    logits = z @ all_gather_with_grad(y).T
    labels = torch.arange(len(z)) + ctx.rank * len(z)
    mse = F.mse_loss(z, y)
    contrast = F.cross_entropy(logits, labels) + F.cross_entropy(z @ all_gather_with_grad(z).T, labels)
    return {"loss": mse + 0.1 * contrast, "mse": mse.detach()}


def random_objective(model: nn.Module, batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
    """MSE under a random mask drawn from ``ctx.generator`` (the model's dropout uses the global RNG)."""
    _delay(ctx)
    x, y = batch
    keep = (torch.rand(y.shape, generator=ctx.generator) > 0.3).float()
    loss = ((model(x) - y) ** 2 * keep).mean()
    return {"loss": loss}


OBJECTIVES = {"mse": mse_objective, "gather": gather_objective, "random": random_objective}


def make_config(steps: int = 6, batch_size: int = 8, **overrides) -> TrainConfig:
    """The config both the script and the in-process runs of the tests use."""
    return TrainConfig(**{"steps": steps, "batch_size": batch_size, "lr": 1e-2, "warmup_steps": 2, "log_every": 1,
                          **overrides})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="mse")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--ckpt-every", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = make_config(args.steps, args.batch_size, grad_accum=args.grad_accum, ckpt_every=args.ckpt_every)
    model = make_model(dropout=0.2 if args.objective == "random" else 0.0)
    trainer = Trainer(model, OBJECTIVES[args.objective], make_dataset(), collate, config, args.out, device="cpu",
                      progress=False)
    trainer.fit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(Path(args.out) / f"final-rank{D.rank()}.safetensors"))
    D.shutdown()


if __name__ == "__main__":
    main()
