"""State-dict maps between vlprune and another library, usable in both directions.

A map is a list of ``Entry``: one tensor of theirs and the vlprune key(s) it becomes. Packed attention
projections (open_clip's ``in_proj_weight``, BLIP's ``qkv``) are one entry with three vlprune keys (q, k, v,
concatenated along dim 0); ``lead`` adds leading singleton dims (a (N, D) position table is our (1, N, D));
``transpose`` is for open_clip's ``x @ proj`` matrices, stored (in, out) where ``nn.Linear`` stores (out, in).
Conversion is strict: a key of theirs that no entry reads, or an entry whose key is absent, raises one
``ConversionError`` naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprune.models.io import CheckpointError, key_problems


class ConversionError(CheckpointError):
    """A checkpoint of another library cannot be converted; the message names the keys or the option."""


@dataclass(frozen=True)
class Entry:
    theirs: str
    ours: tuple[str, ...]
    lead: int = 0
    transpose: bool = False

    def to_ours(self, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.transpose:
            tensor = tensor.t()
        tensor = tensor.reshape((1,) * self.lead + tuple(tensor.shape))
        parts = tensor.chunk(len(self.ours), dim=0) if len(self.ours) > 1 else (tensor,)
        return {key: part.contiguous() for key, part in zip(self.ours, parts)}

    def to_theirs(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        tensor = torch.cat([state[key] for key in self.ours], dim=0) if len(self.ours) > 1 else state[self.ours[0]]
        tensor = tensor.reshape(tuple(tensor.shape)[self.lead:])
        return (tensor.t() if self.transpose else tensor).contiguous()


def rename(theirs: str, ours: str, lead: int = 0, transpose: bool = False) -> Entry:
    return Entry(theirs, (ours,), lead, transpose)


def linear(theirs: str, ours: str, bias: bool = True) -> list[Entry]:
    """``.weight`` (and ``.bias``) of one linear or LayerNorm layer."""
    names = ("weight", "bias") if bias else ("weight",)
    return [rename(f"{theirs}.{n}", f"{ours}.{n}") for n in names]


def packed_qkv(weight: str, bias: str | None, ours: str) -> list[Entry]:
    """One packed (3·inner, D) projection -> our separate ``q``, ``k``, ``v`` of attention ``ours``."""
    entries = [Entry(weight, tuple(f"{ours}.{p}.weight" for p in "qkv"))]
    if bias is not None:
        entries.append(Entry(bias, tuple(f"{ours}.{p}.bias" for p in "qkv")))
    return entries


def to_ours(entries: list[Entry], state: dict[str, torch.Tensor], source: str,
            ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Their state dict -> ours. Keys ending in one of ``ignore`` (non-persistent buffers that older
    checkpoints still hold, e.g. ``position_ids``) are dropped; any other key no entry reads is an error."""
    missing = sorted(e.theirs for e in entries if e.theirs not in state)
    read = {e.theirs for e in entries}
    extra = sorted(k for k in state if k not in read and not k.endswith(ignore))
    problems = key_problems({"missing keys": missing, "unexpected keys": extra}, limit=10)
    if extra:
        problems[-1] += " (an architecture option vlprune does not support?)"
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))
    out: dict[str, torch.Tensor] = {}
    for entry in entries:
        out.update(entry.to_ours(state[entry.theirs]))
    return out


def to_theirs(entries: list[Entry], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> theirs (every entry's vlprune keys must be present)."""
    return {entry.theirs: entry.to_theirs(state) for entry in entries}


def fill_fresh(model: torch.nn.Module, state: dict[str, torch.Tensor], fresh: tuple[str, ...]) -> dict:
    """Add the model's own (initialised) tensors for keys starting with ``fresh``: parts the source does not
    have (e.g. BLIP retrieval checkpoints have no MLM head and no temperature)."""
    own = model.state_dict()
    return {**{k: v for k, v in own.items() if k.startswith(fresh) and k not in state}, **state}

