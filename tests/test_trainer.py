"""The generic trainer: config validation, LR schedule, data order, data parallelism over two ranks, exact
resume after SIGKILL, non-finite loss handling, checkpoint atomicity, gradient accumulation, JSONL metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.train_tiny import (
    collate,
    gather_objective,
    make_config,
    make_dataset,
    make_model,
    mse_objective,
    random_objective,
)
from vlprune.config import ConfigError
from vlprune.distributed import all_gather_with_grad
from vlprune.train import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    load_checkpoint_weights,
    lr_at,
)
from vlprune.train.trainer import global_batch_indices

SCRIPT = str(Path(__file__).parent / "helpers" / "train_tiny.py")


def _run(model, objective, config: TrainConfig, out_dir: Path) -> dict[str, torch.Tensor]:
    trainer = Trainer(model, objective, make_dataset(), collate, config, out_dir, device="cpu", progress=False)
    trainer.fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _launch(out_dir: Path, *args: str, sleep: float = 0.0, nproc: int = 1, **env_extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLPRUNE_TEST_STEP_SLEEP": str(sleep), "VLPRUNE_DIST_TIMEOUT": "60",
           **env_extra}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    return subprocess.Popen([sys.executable, *launcher, SCRIPT, "--out", str(out_dir), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-4000:]


# -- 1. config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, extra", [
    ("steps", 0, {}), ("steps", True, {}), ("batch_size", 0, {}), ("lr", 0.0, {}), ("lr", float("nan"), {}),
    ("weight_decay", -0.1, {}), ("warmup_steps", 11, {}), ("warmup_steps", -1, {}), ("min_lr_ratio", 1.5, {}),
    ("grad_accum", 0, {}), ("grad_accum", 3, {}), ("max_grad_norm", 0.0, {}), ("seed", -1, {}),
    ("ckpt_every", 0, {}), ("keep_checkpoints", 0, {}), ("log_every", 0, {}), ("amp", "yes", {}),
])
def test_config_rejects_bad_values(field, value, extra):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}="):
        TrainConfig(**{"steps": 10, "batch_size": 8, field: value, **extra})


def test_config_json_round_trip():
    config = TrainConfig(steps=10, batch_size=8, lr=3e-4, warmup_steps=3, min_lr_ratio=0.1, grad_accum=2,
                         max_grad_norm=None, seed=7, amp=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({**config.to_dict(), "momentum": 0.9})


# -- 2. schedule and data order -------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:TrainConfig.lr=2")  # lr > 1 warns (tests/test_faults.py)
def test_lr_schedule_hand_computed():
    config = TrainConfig(steps=10, batch_size=8, lr=2.0, warmup_steps=2, min_lr_ratio=0.1)
    assert lr_at(1, config) == pytest.approx(1.0)           # warm-up: 2 * 1/2
    assert lr_at(2, config) == pytest.approx(2.0)           # end of warm-up: peak
    assert lr_at(4, config) == pytest.approx(2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))  # 1.7364
    assert lr_at(6, config) == pytest.approx(2 * 0.55)      # half-way down the cosine
    assert lr_at(10, config) == pytest.approx(0.2)          # min_lr_ratio * lr at the last step
    no_warmup = TrainConfig(steps=4, batch_size=8, lr=1.0)
    assert [lr_at(s, no_warmup) for s in (1, 2, 3, 4)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 4)) for s in (1, 2, 3, 4)])
    with pytest.raises(ValueError):
        lr_at(11, config)


def test_data_order_is_a_pure_function_of_seed_and_step():
    n, batch = 21, 4  # 5 batches per epoch, one item dropped
    epoch0 = [global_batch_indices(s, n, batch, seed=3) for s in range(1, 6)]
    flat = [i for b in epoch0 for i in b]
    assert len(set(flat)) == 20 and all(len(b) == batch for b in epoch0)
    assert global_batch_indices(6, n, batch, seed=3) != epoch0[0]  # epoch 1 is reshuffled
    assert global_batch_indices(2, n, batch, seed=3) == epoch0[1]
    assert global_batch_indices(2, n, batch, seed=4) != epoch0[1]


def test_all_gather_is_identity_in_one_process():
    t = torch.randn(3, 2)
    assert all_gather_with_grad(t) is t


# -- 3. two ranks == one process ------------------------------------------------------------------------

def test_two_ranks_match_single_process(tmp_path):
    proc = _launch(tmp_path / "ddp", "--objective", "gather", "--steps", "6", nproc=2)
    single = _run(make_model(), gather_objective, make_config(6), tmp_path / "single")
    _finish(proc)
    rank0 = load_file(str(tmp_path / "ddp" / "final-rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "ddp" / "final-rank1.safetensors"))
    initial = make_model().state_dict()
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.allclose(rank0[key], value, atol=1e-5, rtol=0), (key, (rank0[key] - value).abs().max())
        assert not torch.equal(value, initial[key]), key  # training moved every tensor


def test_stalled_rank_makes_the_other_exit_with_a_message(tmp_path):
    started = time.monotonic()
    proc = _launch(tmp_path, nproc=2, VLPRUNE_TEST_STALL_RANK="1", VLPRUNE_DIST_TIMEOUT="4")
    output, _ = proc.communicate(timeout=100)
    assert proc.returncode != 0
    assert "DistributedError" in output and "VLPRUNE_DIST_TIMEOUT" in output, output[-4000:]
    assert time.monotonic() - started < 100  # the stalled rank sleeps 120 s: nobody waited for it


# -- 4. SIGKILL and resume ------------------------------------------------------------------------------

def test_resume_after_sigkill_is_bit_identical(tmp_path):
    args = ("--objective", "random", "--steps", "12", "--ckpt-every", "2")
    reference = _launch(tmp_path / "ref", *args)
    victim = _launch(tmp_path / "killed", *args, sleep=0.25)
    deadline = time.monotonic() + 180
    while (latest_checkpoint(tmp_path / "killed") is None
           or latest_checkpoint(tmp_path / "killed").name < "step-000004"):
        assert victim.poll() is None, victim.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint beyond step 2 appeared"
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    interrupted_at = latest_checkpoint(tmp_path / "killed").name
    assert "step-000004" <= interrupted_at < "step-000012"
    _finish(_launch(tmp_path / "killed", *args))
    _finish(reference)
    expected = load_file(str(tmp_path / "ref" / "final-rank0.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "final-rank0.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # lines logged after the last checkpoint were not duplicated


# -- 5. non-finite loss ---------------------------------------------------------------------------------

def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    def nan_at_step_5(model, batch, ctx):
        out = mse_objective(model, batch, ctx)
        return {**out, "loss": out["loss"] * float("nan")} if ctx.step == 5 else out

    model = make_model()
    trainer = Trainer(model, nan_at_step_5, make_dataset(), collate, make_config(8, ckpt_every=2), tmp_path,
                      device="cpu", progress=False)
    with pytest.raises(NonFiniteLossError, match=r"step 5\b") as err:
        trainer.fit()
    assert "step-000004" in str(err.value)
    assert latest_checkpoint(tmp_path).name == "step-000004"
    saved = load_checkpoint_weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in saved.values())
    for key, value in model.state_dict().items():  # the step-5 update was not applied
        assert torch.equal(value, saved[key]), key


# -- 6. atomic checkpoints ------------------------------------------------------------------------------

def test_interrupted_write_is_ignored_and_resume_is_exact(tmp_path):
    config = make_config(8, ckpt_every=2)
    expected = _run(make_model(0.2), random_objective, config, tmp_path / "ref")

    def crash_at_step_5(model, batch, ctx):
        if ctx.step == 5:
            raise KeyboardInterrupt
        return random_objective(model, batch, ctx)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(make_model(0.2), crash_at_step_5, config, run)
    partial = run / "checkpoints" / ".tmp-step-000006"  # as if killed while writing step 6
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00garbage")
    assert latest_checkpoint(run).name == "step-000004"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000004"

    resumed = _run(make_model(0.2), random_objective, config, run)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000006", "step-000008"]
    assert load_checkpoint_weights(root / "step-000008").keys() == expected.keys()

    (root / "latest").write_text("step-000999\n")  # a dangling pointer falls back to the newest complete one
    assert latest_checkpoint(run).name == "step-000008"
    (root / "latest").unlink()
    assert latest_checkpoint(run).name == "step-000008"


# -- 7. gradient accumulation ---------------------------------------------------------------------------

def test_until_stops_on_the_full_schedule_and_a_rerun_goes_on_exactly(tmp_path):
    config = make_config(8, ckpt_every=4)
    expected = _run(make_model(0.2), random_objective, config, tmp_path / "ref")
    model = make_model(0.2)
    trainer = Trainer(model, random_objective, make_dataset(), collate, config, tmp_path / "run", device="cpu",
                      progress=False)
    assert trainer.fit(until=3)["step"] == 3
    assert latest_checkpoint(tmp_path / "run").name == "step-000003"  # a checkpoint where it stopped
    assert trainer.last_metrics["lr"] == pytest.approx(lr_at(3, config))  # the 8-step schedule, not a 3-step one
    with pytest.raises(ConfigError, match="until=9"):
        trainer.fit(until=9)
    resumed = _run(make_model(0.2), random_objective, config, tmp_path / "run")
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_grad_accum_matches_full_batch(tmp_path):
    one = _run(make_model(), mse_objective, make_config(4), tmp_path / "a")
    two = _run(make_model(), mse_objective, make_config(4, grad_accum=2), tmp_path / "b")
    initial = make_model().state_dict()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=0), key
        assert not torch.equal(one[key], initial[key]), key


def test_worker_processes_build_the_same_batches(tmp_path):
    """Batches built ahead in DataLoader workers (with micro-batches, and a resume mid-way) give the same weights
    as batches built in the training process."""
    config = make_config(6, grad_accum=2, ckpt_every=3)
    here = _run(make_model(), mse_objective, config, tmp_path / "here")
    model = make_model()
    Trainer(model, mse_objective, make_dataset(), collate, config, tmp_path / "workers", device="cpu",
            progress=False, workers=2).fit(until=3)
    Trainer(model, mse_objective, make_dataset(), collate, config, tmp_path / "workers", device="cpu",
            progress=False, workers=2).fit()
    for key, value in model.state_dict().items():
        assert torch.equal(value, here[key]), key
    with pytest.raises(ValueError, match="workers=-1"):
        Trainer(make_model(), mse_objective, make_dataset(), collate, config, tmp_path / "bad", device="cpu",
                workers=-1)


# -- 8. metrics -----------------------------------------------------------------------------------------

def test_metrics_jsonl(tmp_path):
    config = make_config(7, log_every=3)
    trainer = Trainer(make_model(), mse_objective, make_dataset(), collate, config, tmp_path, device="cpu",
                      progress=False)
    final = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]
    for record in records:
        assert {"loss", "mse", "lr", "grad_norm", "sec_per_step"} <= record.keys()
        assert record["lr"] == pytest.approx(lr_at(record["step"], config))
        assert record["loss"] == pytest.approx(record["mse"]) and record["sec_per_step"] > 0
    assert final == records[-1]
    assert trainer.fit() == final  # already complete: nothing runs, the last metrics come back
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_position_embeddings_and_cls_token_get_no_weight_decay():
    from helpers.tiny import tiny_clip_config
    from vlprune.models.io import build_model
    from vlprune.train.trainer import default_param_groups

    model = build_model(tiny_clip_config())
    decayed = {id(p) for p in default_param_groups(model, 0.05)[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "visual.pos_embed" not in names and "visual.cls_token" not in names and "text.pos_embed" not in names
    assert "visual.patch_embed.weight" in names
