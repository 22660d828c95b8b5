"""What a token-reduction method saves in *training*: step time, peak memory and analytic training GFLOPs of one
optimisation step (forward + backward), measured against the base model in the same process.

ELIP's published savings are pre-training savings (docs/token-reduction.md: "Note on cost" and "Training with a
method on"): the downstream model is evaluated unpruned.
Analytic training GFLOPs per pair = 3 x the forward that carries gradients (the backward costs about twice the
forward: one matmul for the input gradient, one for the weight gradient) + 1 x any no-grad pass (ELIP's faithful
guide pass), so the ratio to the base is the ideal training speedup.
"""

from __future__ import annotations

import torch

from vlprune.eval.bench import measure
from vlprune.models.flops import model_gflops
from vlprune.reduce.base import ReduceConfig, apply
from vlprune.train.objectives import Objective
from vlprune.train.trainer import TrainContext


def training_gflops_per_pair(model, method: ReduceConfig | None, text_length: int) -> float:
    """Analytic forward+backward GFLOPs per image-text pair with ``method`` on (see module docstring)."""
    config = model.config
    vision = config.vision
    schedule = method.schedule(vision) if method is not None else None
    extra = method.extra_macs(vision) if method is not None else 0
    graded = model_gflops(config, text_length, schedule)
    no_grad = model_gflops(config, text_length, schedule, extra)["vision_gflops"] - graded["vision_gflops"]
    return 3.0 * sum(graded.values()) + no_grad


def saved_activation_mb(loss_fn) -> tuple[torch.Tensor, float]:
    """Run ``loss_fn()`` and return its loss with the megabytes of tensors autograd saved for the backward pass
    (each storage counted once): the activation memory a training step holds at its peak besides weights,
    gradients and optimizer state. Deterministic, unlike the allocator's or the OS's view of memory on CPU."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn()
    return loss, sum(storages.values()) / 2**20


def training_step_cost(model, method: ReduceConfig | None, batch: dict[str, torch.Tensor], objective: Objective,
                       warmup: int = 1, iters: int = 3) -> dict[str, float | None]:
    """Median seconds of one forward+backward step on ``batch`` with ``method`` applied, the activation memory
    saved for backward (``saved_activation_mb``), the process's peak memory growth during the timed steps (CUDA
    allocator / Linux peak RSS, as ``vlprune bench``; on CPU often 0 after warm-up, as freed memory is reused)
    and the analytic training GFLOPs per pair. The model's weights are not changed (gradients are dropped)."""
    apply(model, method)
    model.train()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ctx = TrainContext(step=1, rank=0, world_size=1, generator=generator, device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        objective(model, batch, ctx)["loss"].backward()

    try:
        seconds, peak = measure(step, warmup, iters, device)
        model.zero_grad(set_to_none=True)
        loss, activations = saved_activation_mb(lambda: objective(model, batch, ctx)["loss"])
        del loss
    finally:
        model.zero_grad(set_to_none=True)
        apply(model, None)
        model.eval()
    pairs = batch["pixel_values"].shape[0]
    return {"sec_per_step": seconds, "activation_mb": activations, "peak_mem_mb": peak, "pairs": pairs,
            "pairs_per_s": pairs / seconds,
            "train_gflops_per_pair": training_gflops_per_pair(model, method, batch["input_ids"].shape[1])}
