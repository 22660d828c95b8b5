"""Fault injection: every bad input or damaged file of docs/reliability.md's table gets one line (``vlprune:
error: ...``, exit status 2, key words asserted) and loses nothing: earlier checkpoints stay intact, and a run
resumed past a damaged checkpoint ends with the weights of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import vlprune
from helpers.tiny import tiny_clip_config
from helpers.train_tiny import collate, make_config, make_dataset, make_model, mse_objective, random_objective
from vlprune.cli import main
from vlprune.config import ConfigError
from vlprune.method_registry import list_methods, method_config, parse_method, parse_settings
from vlprune.models.io import MAX_PARAMS_ENV, CheckpointError
from vlprune.registry import model_config
from vlprune.train import Trainer, TrainingStopped, latest_checkpoint
from vlprune.train.checkpoint import MANIFEST_FILE, read_checkpoint

PROGRESS = re.compile(r"^\w+:\s+\d+%\|")  # tqdm's progress bar (a run that fails mid-way has drawn it)


def _fails(argv: list[str], capsys) -> str:
    """Run the CLI; assert it failed with status 2 and exactly one stderr line, and return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vlprune: error: "), err
    return lines[0]


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- checkpoints ----------------------------------------------------------------------------------------

def _train(out: Path, objective=random_objective, steps: int = 8) -> dict[str, torch.Tensor]:
    model = make_model(0.2)
    Trainer(model, objective, make_dataset(), collate, make_config(steps, ckpt_every=2), out, device="cpu",
            progress=False).fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _interrupted_run(tmp_path: Path) -> Path:
    """A run stopped after the checkpoints of steps 4 and 6 (step 7 crashed)."""
    def crash_at_step_7(model, batch, ctx):
        if ctx.step == 7:
            raise KeyboardInterrupt
        return random_objective(model, batch, ctx)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(run, crash_at_step_7)
    assert latest_checkpoint(run).name == "step-000006"
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # in the last tensor's data: the file still parses, one weight changed
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage", [
    ("model.safetensors", _truncate), ("optimizer.safetensors", _truncate), ("rng.safetensors", _truncate),
    ("trainer.json", _truncate), ("optimizer.json", _truncate), ("model.safetensors", _flip_byte),
])
def test_damaged_latest_checkpoint_is_named_skipped_and_the_run_ends_as_uninterrupted(tmp_path, capsys, name,
                                                                                       damage):
    expected = _train(tmp_path / "ref")
    run = _interrupted_run(tmp_path)
    damage(run / "checkpoints" / "step-000006" / name)
    with pytest.raises(CheckpointError, match=name):
        read_checkpoint(run / "checkpoints" / "step-000006")
    capsys.readouterr()

    resumed = _train(run)
    err = capsys.readouterr().err
    assert f"skipping checkpoint step-000006: {run}/checkpoints/step-000006/{name}" in err
    assert "resuming from" in err and "step-000004 (step 4)" in err
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert read_checkpoint(run / "checkpoints" / "step-000006").step == 6  # rewritten by the resumed run
    assert read_checkpoint(run / "checkpoints" / "step-000008").step == 8


def test_a_flipped_byte_is_caught_by_the_checksum_not_by_parsing(tmp_path):
    run = _interrupted_run(tmp_path)
    file = run / "checkpoints" / "step-000006" / "model.safetensors"
    _flip_byte(file)
    assert load_file(str(file)).keys()  # still a valid safetensors file: only the manifest tells
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        read_checkpoint(file.parent)


def test_no_good_checkpoint_stops_in_one_error_and_changes_nothing(tmp_path, capsys):
    run = _interrupted_run(tmp_path)
    for step in ("step-000004", "step-000006"):
        (run / "checkpoints" / step / MANIFEST_FILE).write_text("{")
    before = _tree(run)
    with pytest.raises(CheckpointError, match="no checkpoint .* can be resumed .*nothing was changed"):
        _train(run)
    assert _tree(run) == before
    err = capsys.readouterr().err
    assert err.count("skipping checkpoint") == 2 and "manifest.json is not valid JSON" in err


def test_overflowing_optimizer_step_names_the_step(tmp_path):
    huge = lambda m: [{"params": list(m.parameters()), "lr": 1e300, "weight_decay": 0.0}]  # noqa: E731
    trainer = Trainer(make_model(), mse_objective, make_dataset(), collate, make_config(4, ckpt_every=1), tmp_path,
                      huge, device="cpu", progress=False)
    with pytest.raises(TrainingStopped, match=r"optimizer step failed at step 1\b.*no checkpoint was written"):
        trainer.fit()
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("fault, words", [("raise", "optimizer step failed at step 3"),
                                          ("inf", "update of step 3 made weights non-finite")])
def test_failed_update_names_the_step_and_keeps_the_last_checkpoint(tmp_path, fault, words):
    model = make_model()
    trainer = Trainer(model, mse_objective, make_dataset(), collate, make_config(6, ckpt_every=1), tmp_path,
                      device="cpu", progress=False)
    calls = []

    def pre(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == 3 and fault == "raise":
            raise RuntimeError("simulated device error")

    def post(optimizer, args, kwargs):
        if len(calls) == 3 and fault == "inf":
            next(model.parameters()).data.fill_(float("inf"))

    trainer.optimizer.register_step_pre_hook(pre)
    trainer.optimizer.register_step_post_hook(post)
    with pytest.raises(TrainingStopped, match=words + r".*Last good checkpoint: .*step-000002"):
        trainer.fit()
    assert latest_checkpoint(tmp_path).name == "step-000002"
    state = read_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in state.model.values())


# -- vlprune train: bad values ---------------------------------------------------------------------------

@pytest.fixture
def tiny_dir(tmp_path, tokenizer) -> str:
    torch.manual_seed(0)
    return str(vlprune.save(vlprune.build_model(tiny_clip_config()), tmp_path / "tiny", tokenizer))


def _train_argv(model: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", model, "--out", str(out), "--steps", "4", "--batch-size", "4", "--warmup-steps",
            "1", "--ckpt-every", "2", "--train-size", "64", *extra]


@pytest.mark.parametrize("tasks", ["itc:-1", "itc:0", "itc:nan", "itc:inf"])
def test_task_weights_must_be_finite_and_positive(tiny_dir, tmp_path, capsys, tasks):
    line = _fails(_train_argv(tiny_dir, tmp_path / "run", "--tasks", tasks), capsys)
    assert "--tasks" in line and "finite number > 0" in line
    assert not (tmp_path / "run").exists()


def test_batch_of_one_pair_with_itc_is_refused_before_step_1(tiny_dir, tmp_path, capsys):
    line = _fails(_train_argv(tiny_dir, tmp_path / "run", "--batch-size", "1"), capsys)
    assert "1 pair per rank" in line and "itc" in line and "--batch-size" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", ["1e30", "1e300", "inf", "-1"])
def test_absurd_learning_rates_are_refused(tiny_dir, tmp_path, capsys, lr):
    line = _fails(_train_argv(tiny_dir, tmp_path / "run", "--lr", lr), capsys)
    assert "TrainConfig.lr=" in line and "(0, 1000]" in line


def test_large_learning_rate_warns_in_one_line(tiny_dir, tmp_path):
    argv = _train_argv(tiny_dir, tmp_path / "run", "--lr", "2", "--steps", "2", "--warmup-steps", "0")
    done = subprocess.run([sys.executable, "-m", "vlprune.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [line for line in done.stderr.splitlines() if "TrainConfig.lr=2" in line]
    assert len(warned) == 1 and warned[0].startswith("vlprune: warning: "), done.stderr[-3000:]


def test_non_finite_loss_in_a_cli_run_is_one_line_naming_the_step(tiny_dir, tmp_path, capsys, monkeypatch):
    from vlprune.train.objectives import Objective

    real = Objective.__call__

    def nan_at_step_3(self, model, batch, ctx):
        out = real(self, model, batch, ctx)
        return {**out, "loss": out["loss"] * float("nan")} if ctx.step == 3 else out

    monkeypatch.setattr(Objective, "__call__", nan_at_step_3)
    line = _fails(_train_argv(tiny_dir, tmp_path / "run"), capsys)
    assert "non-finite loss at step 3" in line and "step-000002" in line
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "step-000002").step == 2


def test_out_that_is_a_file_is_refused(tiny_dir, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("keep me")
    line = _fails(_train_argv(tiny_dir, file), capsys)
    assert f"--out {file} is a file" in line
    assert file.read_text() == "keep me"


@pytest.mark.parametrize("data", ["toyworld:val:0", "toyworld:val:-5", "toyworld:val:abc", "toyworld:val:10001",
                                  "toyworld:nosuch:5"])
def test_bad_data_counts_are_refused(tiny_dir, capsys, data):
    line = _fails(["eval", "--model", tiny_dir, "--data", data], capsys)
    assert f"--data {data!r}" in line


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--threads", "0"),
                                         ("--batch-size", "x")])
def test_bad_batch_sizes_and_threads_are_refused(tiny_dir, capsys, flag, value):
    line = _fails(["eval", "--model", tiny_dir, flag, value], capsys)
    assert flag in line and "whole number >= 1" in line


def test_bad_batch_size_in_train_is_refused(tiny_dir, tmp_path, capsys):
    line = _fails(_train_argv(tiny_dir, tmp_path / "run", "--batch-size", "0"), capsys)
    assert "--batch-size" in line


# -- vlprune train: a damaged run resumes exactly --------------------------------------------------------

def test_truncated_latest_weights_of_a_cli_run_resume_from_the_previous_step(tiny_dir, tmp_path, capsys):
    assert main(_train_argv(tiny_dir, tmp_path / "ref")) == 0
    expected = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    run = tmp_path / "run"
    assert main(_train_argv(tiny_dir, run, "--until", "2")) == 0
    assert main(_train_argv(tiny_dir, run, "--until", "3")) == 0  # checkpoints step 2 and step 3
    _truncate(run / "checkpoints" / "step-000003" / "model.safetensors")
    capsys.readouterr()
    assert main(_train_argv(tiny_dir, run)) == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint step-000003" in err and "model.safetensors has" in err
    assert "step-000002 (step 2)" in err
    resumed = load_file(str(run / "model" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


# -- vlprune convert / load: damaged configs, tokenizers and weights ------------------------------------

@pytest.mark.parametrize("content, words", [(b"5", "expected a JSON object"), (b'{"architectures": ["CLIPMo', "JSON"),
                                            (b'{"name": "\xff\xfe"}', "UTF-8")])
def test_convert_with_a_bad_config_names_the_file(tmp_path, capsys, content, words):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_bytes(content)
    line = _fails(["convert", str(src), "--out", str(tmp_path / "out")], capsys)
    assert str(src / "config.json") in line and words in line
    assert not (tmp_path / "out").exists()


def test_the_parameter_limit_is_a_flag(tiny_dir, capsys):
    line = _fails(["info", tiny_dir, "--max-params", "1000"], capsys)
    assert "above the limit of 1,000" in line
    assert main(["info", tiny_dir, "--max-params", "1e6"]) == 0


@pytest.mark.parametrize("section, field, value", [("text", "vocab_size", 10**10), ("vision", "width", 10**6),
                                                   ("text", "num_layers", 100_000)])
def test_config_with_absurd_sizes_is_refused_before_allocation(tiny_dir, capsys, monkeypatch, section, field,
                                                                value):
    monkeypatch.delenv(MAX_PARAMS_ENV, raising=False)
    config = model_config("toy-clip").to_dict()  # the bundled toy-clip's sizes, one of them absurd
    config[section][field] = value
    for name in ("num_heads", "intermediate_size", "layer_map"):  # per-layer lists follow num_layers
        config[section][name] = config[section][name][0] if name != "layer_map" else None
    (Path(tiny_dir) / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    line = _fails(["info", tiny_dir], capsys)
    assert "parameters" in line and "above the limit of 4,000,000,000" in line and "--max-params" in line
    assert time.monotonic() - started < 5


def test_tokenizer_pointer_without_its_dir_is_named(tiny_dir, capsys):
    (Path(tiny_dir) / "tokenizer.json").write_text(json.dumps({"type": "hf", "max_length": 16}))
    line = _fails(["eval", "--model", tiny_dir, "--data", "toyworld:val:4"], capsys)
    assert "tokenizer.json" in line and "dir" in line


def test_integer_weights_are_refused_not_cast(tiny_dir, capsys):
    path = Path(tiny_dir) / "model.safetensors"
    state = load_file(str(path))
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key] = state[key].round().to(torch.int32)
    save_file(state, str(path))
    line = _fails(["info", tiny_dir], capsys)
    assert key in line and "int32" in line


# -- vlprune bench --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [(["--batch-sizes", "0"], "--batch-sizes"),
                                         (["--batch-sizes", "1,x"], "--batch-sizes"),
                                         (["--device", "nosuch"], "--device")])
def test_bench_bad_values_are_one_line(tiny_dir, capsys, args, words):
    line = _fails(["bench", "--model", tiny_dir, *args], capsys)
    assert words in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line(tiny_dir, capsys):
    line = _fails(["bench", "--model", tiny_dir, "--device", "cuda"], capsys)
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_debug_shows_the_traceback(tiny_dir, monkeypatch):
    monkeypatch.setenv("VLPRUNE_DEBUG", "1")
    with pytest.raises(ValueError, match="COUNT"):
        main(["eval", "--model", tiny_dir, "--data", "toyworld:val:0"])


# -- fuzz: --set values and method specs ----------------------------------------------------------------

FIELD_NAMES = sorted({f.name for name in list_methods() for f in dataclasses.fields(type(method_config(name)))})
VALUE_TEXT = st.one_of(st.text(max_size=12), st.from_regex(r"[\[\]0-9.,eE+\-\"a-z{}:]{0,16}", fullmatch=True),
                       st.sampled_from(["nan", "inf", "-1", "0", "1e400", "[3,6,9]", "[]", "null", "true", "{}"]))
SETTING_TEXT = st.one_of(st.text(max_size=30), st.builds("{}={}".format, st.sampled_from(FIELD_NAMES), VALUE_TEXT))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["none", *list_methods()]), settings_text=st.lists(SETTING_TEXT, max_size=3))
def test_any_set_text_builds_a_method_or_raises_config_error(name, settings_text):
    try:
        values = parse_settings(settings_text, "--set")
        if name != "none":
            method_config(name, **values)
        parse_method(f"{name}:{','.join(settings_text)}")
    except ConfigError as err:
        assert "\n" not in str(err)
