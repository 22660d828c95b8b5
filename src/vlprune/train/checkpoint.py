"""Training checkpoints on disk: ``OUT/checkpoints/step-XXXXXX/`` written atomically, with a SHA-256 manifest
that resume verifies before anything is loaded.

A checkpoint directory holds ``model.safetensors``, ``optimizer.safetensors`` + ``optimizer.json`` (an
optimizer state_dict split into tensors and plain values), ``rng.safetensors``, ``trainer.json`` (step, data
position, config, metrics, python / numpy RNG states) and ``manifest.json`` (the SHA-256 and size of every
other file). It is written into ``.tmp-step-XXXXXX``, flushed, and renamed into place; the ``latest`` pointer
moves last. ``read_checkpoint`` checks the manifest and parses every file before it returns, so a truncated,
flipped or half-copied checkpoint is one ``CheckpointError`` naming the file, and nothing is half loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlprune.config import read_json_object
from vlprune.models.io import CheckpointError

DATA_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "trainer.json")
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILES = DATA_FILES + (MANIFEST_FILE,)
TRAINER_FIELDS = ("step", "dataset_len", "config", "metrics", "python_random", "numpy_random")
_STEP_DIR = re.compile(r"^step-(\d+)$")


# -- paths ----------------------------------------------------------------------------------------------

def step_of(path: Path) -> int:
    """The step of a ``step-XXXXXX`` directory; -1 for any other name."""
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else -1


def _is_complete(path: Path) -> bool:
    return step_of(path) >= 0 and all((path / name).is_file() for name in CHECKPOINT_FILES)


def checkpoint_candidates(out_dir: str | Path) -> list[Path]:
    """Every ``step-*`` directory of a run, the one the ``latest`` pointer names first, then newest first.
    Incomplete ones are listed too: resume reports why each one it skips cannot be used."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    steps = sorted((p for p in root.iterdir() if step_of(p) >= 0 and p.is_dir()), key=step_of, reverse=True)
    pointer = root / "latest"
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    return sorted(steps, key=lambda p: p != named)  # stable: the pointer's target first, the rest newest first


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint named by ``out_dir/checkpoints/latest``, or the newest complete one if that pointer is
    missing or dangling; None if there is none. ``.tmp-*`` leftovers of interrupted writes are ignored. Only
    the presence of the files is checked here; ``read_checkpoint`` verifies them."""
    complete = [p for p in checkpoint_candidates(out_dir) if _is_complete(p)]
    return complete[0] if complete else None


def load_checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a ``model.safetensors`` file, a checkpoint directory, or a run's ``out_dir``
    (its latest checkpoint)."""
    path = Path(path)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path} holds no checkpoint (no checkpoints/step-* with all of "
                                    f"{list(CHECKPOINT_FILES)})")
        path = latest
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    return load_file(str(file))


# -- writing --------------------------------------------------------------------------------------------

def _fsync_path(path: Path) -> None:
    """Flush a file, or a directory entry list (POSIX only), to disk."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU copies: safetensors refuses tensors that share memory (tied weights)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into safetensors (``state.{idx}.{name}``) and JSON parts."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for idx, entry in state["state"].items():
        plain = {k: v for k, v in entry.items() if not isinstance(v, torch.Tensor)}
        names = sorted(k for k, v in entry.items() if isinstance(v, torch.Tensor))
        tensors.update({f"state.{idx}.{k}": entry[k].detach().to("cpu", copy=True).contiguous() for k in names})
        meta[str(idx)] = {"tensors": names, "values": plain}
    return tensors, {"param_groups": state["param_groups"], "state": meta}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {int(idx): {**entry["values"], **{k: tensors[f"state.{idx}.{k}"] for k in entry["tensors"]}}
             for idx, entry in meta["state"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states: torch (CPU, CUDA) as tensors, python / numpy as JSON values."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python_random": [version, list(internal), gauss],
             "numpy_random": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python_random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy_random"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_checkpoint(root: Path, step: int, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                     trainer_info: dict[str, Any]) -> Path:
    """Write ``root/step-XXXXXX`` atomically (temporary directory, fsync, rename) with its manifest, move the
    ``latest`` pointer to it, and return it. ``trainer_info`` goes into ``trainer.json`` beside the RNG states."""
    name = f"step-{step:06d}"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_cpu_copy(model_state), str(tmp / "model.safetensors"), metadata={"step": str(step)})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    _write_json(tmp / "optimizer.json", opt_meta)
    rng_tensors, rng_plain = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    _write_json(tmp / "trainer.json", {"step": step, **trainer_info, **rng_plain})
    for file in DATA_FILES:
        _fsync_path(tmp / file)
    _write_json(tmp / MANIFEST_FILE, {"sha256": {f: _sha256(tmp / f) for f in DATA_FILES},
                                      "bytes": {f: (tmp / f).stat().st_size for f in DATA_FILES}})
    _fsync_path(tmp / MANIFEST_FILE)
    _fsync_path(tmp)
    final = root / name
    if final.exists():  # left by an earlier attempt at this step (crashed, or skipped on resume as corrupt)
        stale = root / f".tmp-stale-{name}"
        os.rename(final, stale)
        shutil.rmtree(stale)
    os.rename(tmp, final)
    _fsync_path(root)
    pointer = root / ".tmp-latest"
    pointer.write_text(name + "\n")
    _fsync_path(pointer)
    os.replace(pointer, root / "latest")
    _fsync_path(root)
    return final


def prune_checkpoints(root: Path, step: int, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints up to ``step``; later ones are stale (a resumed run passed them)."""
    done = sorted((p for p in root.glob("step-*") if step_of(p) >= 0), key=step_of)
    kept = set(sorted((p for p in done if step_of(p) <= step), key=step_of)[-keep:])
    for path in done:
        if path not in kept:
            doomed = path.with_name(f".tmp-old-{path.name}")
            os.rename(path, doomed)
            shutil.rmtree(doomed)


# -- reading --------------------------------------------------------------------------------------------

@dataclass
class CheckpointState:
    """Everything a checkpoint holds, verified and parsed (on CPU, except the model on ``device``)."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    trainer: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "checkpoint file", CheckpointError)


def _read_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); truncated?") from None


def verify_manifest(path: Path) -> None:
    """Check every file of checkpoint ``path`` against its ``manifest.json`` (size, then SHA-256)."""
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name} is missing")
    manifest = _read_json(path / MANIFEST_FILE)
    digests, sizes = manifest.get("sha256"), manifest.get("bytes")
    if not (isinstance(digests, dict) and isinstance(sizes, dict) and set(DATA_FILES) <= digests.keys() & sizes.keys()):
        raise CheckpointError(f"{path / MANIFEST_FILE} does not list the SHA-256 and size of each of "
                              f"{list(DATA_FILES)}")
    for name in DATA_FILES:
        size = (path / name).stat().st_size
        if size != sizes[name]:
            raise CheckpointError(f"{path / name} has {size} bytes, the manifest says {sizes[name]} (truncated?)")
        if _sha256(path / name) != digests[name]:
            raise CheckpointError(f"{path / name} does not match its SHA-256 in the manifest (the file changed "
                                  "after it was written: disk or copy error?)")


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> CheckpointState:
    """Verify checkpoint ``path`` (``verify_manifest``) and parse every file; raises ``CheckpointError`` naming
    the first file that fails."""
    verify_manifest(path)
    trainer = _read_json(path / "trainer.json")
    missing = [k for k in TRAINER_FIELDS if k not in trainer]
    if missing:
        raise CheckpointError(f"{path / 'trainer.json'} lacks field(s) {missing}")
    meta = _read_json(path / "optimizer.json")
    tensors = _read_tensors(path / "optimizer.safetensors")
    try:
        optimizer = _unflatten_optimizer(tensors, meta)
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path / 'optimizer.json'} does not describe {path / 'optimizer.safetensors'} "
                              f"(entry {err})") from None
    return CheckpointState(path=path, step=int(trainer["step"]), model=_read_tensors(path / "model.safetensors",
                           str(device)), optimizer=optimizer, rng=_read_tensors(path / "rng.safetensors"),
                           trainer=trainer)
