"""Thin helpers over ``torch.distributed`` for runs launched with ``torchrun``.

Every helper is the identity (or a no-op) in a single process, so objectives can call them unconditionally.
A collective that fails (a peer died, or did not arrive within ``VLPRUNE_DIST_TIMEOUT`` seconds, default 300)
raises ``DistributedError`` with a message instead of hanging.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(RuntimeError):
    """A process group could not be joined, or a collective failed or timed out."""


def timeout_seconds() -> float:
    """Seconds a rank waits for the others (env ``VLPRUNE_DIST_TIMEOUT``, default 300)."""
    raw = os.environ.get("VLPRUNE_DIST_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"VLPRUNE_DIST_TIMEOUT={raw!r} is invalid: expected a positive number of seconds")
    return value


def env_world_size() -> int:
    """World size requested by the launcher (env ``WORLD_SIZE``, 1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """Rank of this process on its node (env ``LOCAL_RANK``, 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(backend: str) -> bool:
    """Join the process group described by the ``torchrun`` environment when ``WORLD_SIZE`` > 1.

    Does nothing if a group is already initialised or the run is single-process. Returns ``is_distributed()``.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    seconds = timeout_seconds()
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as err:
        raise DistributedError(
            f"rank {os.environ.get('RANK', '?')}: could not join the {backend} process group of "
            f"{env_world_size()} ranks within {seconds:g}s (VLPRUNE_DIST_TIMEOUT): {err}") from err
    return is_distributed()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shutdown() -> None:
    """Leave the process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def _collective(name: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as err:
        raise DistributedError(
            f"rank {rank()}/{world_size()}: {name} failed; another rank probably crashed or did not reach "
            f"{name} within {timeout_seconds():g}s (VLPRUNE_DIST_TIMEOUT): {err}") from err


def barrier() -> None:
    """Wait until every rank gets here."""
    if not is_distributed():
        return
    with _collective("barrier"):
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce with ``op`` in {sum, max, min}; returns ``tensor``."""
    if op not in _OPS:
        raise ValueError(f"op={op!r} is invalid: expected one of {sorted(_OPS)}")
    if is_distributed():
        with _collective(f"all_reduce({op})"):
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]))
    return tensor


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average each tensor over ranks in place, with one collective per (dtype, device)."""
    if not is_distributed() or not tensors:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    n = world_size()
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        with _collective("all_reduce(gradients)"):
            dist.all_reduce(flat)
        flat.div_(n)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank, in place."""
    if not is_distributed():
        return
    with _collective("broadcast(parameters)"), torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and keeps this rank's rows, so the
    mean over ranks of per-rank losses gets exactly the single-process gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        with _collective("all_gather"):
            dist.all_gather(parts, tensor)
        ctx.rows = (rank() * tensor.shape[0], (rank() + 1) * tensor.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        with _collective("all_reduce(all_gather grad)"):
            dist.all_reduce(grad)
        start, stop = ctx.rows
        return grad[start:stop]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank (rank order) along dim 0; gradient flows back to each rank's
    own rows. Every rank must pass the same shape. Identity when not distributed."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)
