"""Data parallelism with the real ITC objective: two ranks, each holding half of the global batch and gathering
the other half's embeddings (``all_gather_with_grad``), train exactly as one process on the whole batch.

The runs are in float64: in float32 the attention key biases (whose true gradient is exactly zero) random-walk
on rounding noise amplified by AdamW (see helpers/train_itc.py) and a few weights then differ by ~2e-5 after
4 steps. In float64 the two runs agree to ~1e-13, so any real difference in the gradients would show."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers.train_itc import make_model, run

SCRIPT = str(Path(__file__).parent / "helpers" / "train_itc.py")
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_itc_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLPRUNE_DIST_TIMEOUT": "60"}
    out = tmp_path / "ddp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), SCRIPT, "--out", str(out),
         "--steps", str(STEPS), "--dtype", "float64"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run(tmp_path / "single", STEPS, torch.float64)  # meanwhile, the same run in this process
    finally:
        torch.set_num_threads(threads)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-4000:]

    rank0 = load_file(str(out / "final-rank0.safetensors"))
    rank1 = load_file(str(out / "final-rank1.safetensors"))
    initial = make_model(torch.float64).state_dict()
    assert set(rank0) == set(single) == set(initial)
    moved = 0
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        assert value.dtype == torch.float64, key
        assert torch.allclose(rank0[key], value, atol=1e-9, rtol=0), (key, (rank0[key] - value).abs().max())
        moved += not torch.equal(value, initial[key])
    assert moved > 0.9 * len(single)  # training changed (nearly) every tensor, so the comparison has teeth
    assert not torch.equal(single["logit_scale"], initial["logit_scale"])
