"""Training and pruning on real-format data (issue 23, part 2): the toy world exported as webdataset shards and a
Karpathy split, trained through ``vlprune train --data`` under torchrun (ranks and DataLoader workers see each
sample of an epoch once), resumed after SIGKILL to the uninterrupted weights, and pruned with ``vlprune prune
--data --val-data``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.cli import main
from vlprune.data.export import data_spec, export_toyworld
from vlprune.data.toyworld import toy_tokenizer
from vlprune.train import latest_checkpoint
from vlprune.train.trainer import TrainConfig, global_batch_indices, rank_batch_indices

HOOKS = str(Path(__file__).parent / "helpers" / "cli_hooks.py")
SAMPLES, SHARD_SIZE, BATCH, ACCUM = 26, 10, 8, 2  # 3 shards (10, 10, 6); an epoch = 3 steps of 8, 2 dropped


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A tiny CLIP checkpoint, the toy world's first train items as wds shards and as a Karpathy train split, and
    a Karpathy val split."""
    root = tmp_path_factory.mktemp("real")
    torch.manual_seed(0)
    model = vlprune.save(vlprune.build_model(tiny_clip_config()), root / "tiny", toy_tokenizer())
    export_toyworld("wds", root / "wds", SAMPLES, split="train", image_size=32, shard_size=SHARD_SIZE)
    export_toyworld("karpathy", root / "karpathy", 24, split="train", image_size=32)
    export_toyworld("karpathy", root / "karpathy-val", 16, split="val", image_size=32)
    return {"model": str(model), "wds": data_spec("wds", root / "wds"),
            "karpathy": data_spec("karpathy", root / "karpathy", "train"),
            "val": data_spec("karpathy", root / "karpathy-val", "val")}


def _train_argv(model: str, out: Path, spec: str, *extra: str) -> list[str]:
    return ["train", "--model", model, "--out", str(out), "--data", spec, "--steps", "3", "--batch-size",
            str(BATCH), "--warmup-steps", "1", "--log-every", "1", *extra]


def _hooked(argv: list[str], nproc: int = 1, **env: str) -> subprocess.Popen:
    """``vlprune ARGV`` in a subprocess (under torchrun with ``nproc`` > 1) with the test hooks of cli_hooks.py."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    return subprocess.Popen([sys.executable, *launcher, HOOKS, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "VLPRUNE_DIST_TIMEOUT": "60", **env})


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-4000:]
    return output


def _records(folder: Path, name: str) -> dict[int, list[dict]]:
    """The hook's records by rank (every process of the rank: trainer and DataLoader workers)."""
    out: dict[int, list[dict]] = {}
    for path in folder.glob(f"{name}-rank*.jsonl"):
        rank = int(path.name.split("-rank")[1].split("-")[0])
        out.setdefault(rank, []).extend(json.loads(line) for line in path.read_text().splitlines())
    return out


@pytest.fixture(scope="module")
def elip_run(data, tmp_path_factory) -> tuple[Path, Path]:
    """``vlprune train --method elip --data wds:...`` for one epoch under ``torchrun --nproc_per_node 2``, two
    DataLoader workers a rank, two micro-batches a step, every batch and sample read recorded."""
    root = tmp_path_factory.mktemp("elip")
    seen = root / "seen"
    seen.mkdir()
    argv = _train_argv(data["model"], root / "run", data["wds"], "--grad-accum", str(ACCUM), "--workers", "2",
                       "--method", "elip", "--set", "stages=[1,1]", "--set", "keep=[0.5]")
    _finish(_hooked(argv, nproc=2, VLPRUNE_TEST_SEEN_DIR=str(seen)))
    return root / "run", seen


def test_two_ranks_over_shards_see_disjoint_samples_that_make_the_epoch(elip_run):
    _, seen = elip_run
    config = TrainConfig(steps=3, batch_size=BATCH, grad_accum=ACCUM)
    batches = _records(seen, "batches")
    assert sorted(batches) == [0, 1]
    assert all(len(list(seen.glob(f"samples-rank{r}-*"))) == 2 for r in (0, 1))  # both workers of each rank read
    for rank, records in batches.items():  # each rank loaded exactly the pure function's micro-batches
        assert sorted((r["step"], r["micro"]) for r in records) == [(s, m) for s in (1, 2, 3) for m in range(ACCUM)]
        for r in records:
            assert r["indices"] == rank_batch_indices(r["step"], r["micro"], SAMPLES, config, rank, 2)
    keys = {rank: [r["key"] for r in records] for rank, records in _records(seen, "samples").items()}
    assert all(len(k) == len(set(k)) for k in keys.values()), "a rank read a sample twice in the epoch"
    assert not set(keys[0]) & set(keys[1]), "two ranks read the same sample"
    epoch = {f"{i:06d}" for step in (1, 2, 3) for i in global_batch_indices(step, SAMPLES, BATCH, 0)}
    assert set(keys[0]) | set(keys[1]) == epoch and len(epoch) == SAMPLES - SAMPLES % BATCH
    assert Counter(map(len, keys.values())) == Counter({len(epoch) // 2: 2})


def test_elip_on_wds_shards_under_torchrun_saves_a_model(elip_run, data):
    run, _ = elip_run
    model = vlprune.load(run / "model")
    assert model.num_params() == vlprune.load(data["model"]).num_params()
    trainer = json.loads((latest_checkpoint(run) / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and trainer["dataset_len"] == SAMPLES and trainer["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_sigkilled_wds_run_resumes_to_the_uninterrupted_weights(data, tmp_path):
    argv = ["--steps", "5", "--ckpt-every", "2"]
    whole = _hooked(_train_argv(data["model"], tmp_path / "whole", data["wds"], *argv))
    killed = _hooked(_train_argv(data["model"], tmp_path / "killed", data["wds"], *argv),
                     VLPRUNE_TEST_KILL_AT_STEP="4")
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "killed").name == "step-000002"
    assert not (tmp_path / "killed" / "model").exists()
    _finish(whole)
    output = _finish(_hooked(_train_argv(data["model"], tmp_path / "killed", data["wds"], *argv)))
    assert "resuming from" in output and "step 2" in output
    resumed = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    uninterrupted = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_karpathy_split_trains(data, tmp_path, capsys):
    assert main(_train_argv(data["model"], tmp_path / "run", data["karpathy"], "--tasks", "itc")) == 0
    assert vlprune.load(tmp_path / "run" / "model").num_params() > 0
    trainer = json.loads((latest_checkpoint(tmp_path / "run") / "trainer.json").read_text())
    assert trainer["dataset_len"] == 24  # one caption an image: 24 pairs


@pytest.mark.parametrize("extra, words", [(("--tasks", "itc,scene"), ["--tasks scene", "itc, itm or mlm"]),
                                          (("--twins", "1"), ["--twins 1", "toy world"])])
def test_toy_only_tasks_on_real_data_are_refused_in_one_line(data, tmp_path, capsys, extra, words):
    assert main(_train_argv(data["model"], tmp_path / "run", data["karpathy"], *extra)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlprune: error: ") and data["karpathy"] in lines[0]
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "run").exists()


def test_prune_on_karpathy_data_runs_end_to_end(data, tmp_path, capsys):
    argv = ["prune", "--model", data["model"], "--out", str(tmp_path / "pruned"), "--data", data["karpathy"],
            "--val-data", data["val"], "--val-pairs", "16", "--grad-pairs", "8", "--distill-steps", "2",
            "--distill-batch", "4", "--groups", "4", "--target-params", "0.6"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "pruned" / "prune.json").read_text())
    assert record["config"]["data"] == data["karpathy"] and record["config"]["val_data"] == data["val"]
    assert [s["step"] for s in record["steps"]][:3] == ["base", "width", "distil-width"]
    pruned = vlprune.load(tmp_path / "pruned" / "model")
    assert pruned.num_params("vision") < vlprune.load(data["model"]).num_params("vision")
