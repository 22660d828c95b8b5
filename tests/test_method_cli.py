"""One method dialect on every subcommand: ``--method NAME`` then ``--set KEY=VALUE`` (repeatable); bench keeps
each method's settings apart; ``NAME:k=v`` stays a shorthand."""

from __future__ import annotations

import inspect
import json

import pytest

from vlprune.cli import main
from vlprune.method_registry import parse_method


@pytest.fixture
def captured_train(monkeypatch) -> dict:
    """Stop ``vlprune train`` at the recipe and keep what the CLI passed it."""
    import vlprune.train.recipe as recipe

    seen: dict = {}
    signature = inspect.signature(recipe.train)

    def fake_train(*args, **kwargs):
        seen.update(signature.bind(*args, **kwargs).arguments)
        return seen["out_dir"]

    monkeypatch.setattr(recipe, "train", fake_train)
    return seen


def test_train_reads_set_for_token_methods(captured_train, tmp_path):
    assert main(["train", "--model", "toy-clip", "--out", str(tmp_path / "run"), "--method", "elip",
                 "--set", "keep=[0.9,0.6,0.3]", "--set", "lam=0.5"]) == 0
    config = parse_method(captured_train["method"])[1]
    assert config.keep == (0.9, 0.6, 0.3) and config.lam == 0.5


def test_shorthand_and_set_combine(captured_train, tmp_path):
    assert main(["train", "--model", "toy-clip", "--out", str(tmp_path / "run"), "--method", "tome:r=2",
                 "--set", "proportional_attn=false"]) == 0
    config = parse_method(captured_train["method"])[1]
    assert config.r == 2 and config.proportional_attn is False


def test_set_before_method_and_two_methods_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", "toy-clip", "--set", "r=2", "--method", "tome"])
    assert exit_.value.code == 2 and "comes before any --method" in capsys.readouterr().err
    assert main(["eval", "--model", "toy-clip", "--method", "tome", "--method", "evit"]) == 2
    assert "this command takes one" in capsys.readouterr().err


def test_bench_keeps_each_methods_settings_apart(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "toy-clip", "--method", "none", "--method", "tome", "--set", "r=2",
                 "--method", "evit", "--set", "keep_ratio=0.7", "--batch-sizes", "2", "--warmup", "0",
                 "--iters", "1", "--rounds", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["none", "tome:r=2", "evit:keep_ratio=0.7"]
    assert rows[1]["vision_gflops"] < rows[0]["vision_gflops"] and rows[2]["vision_gflops"] < rows[0]["vision_gflops"]


def test_prune_set_overrides_prune_config_fields(tmp_path, capsys):
    assert main(["prune", "--model", "toy-clip", "--out", str(tmp_path / "p"), "--method", "magnitude",
                 "--set", "nosuch=1"]) == 2
    assert "unknown field(s) ['nosuch']" in capsys.readouterr().err
    assert main(["prune", "--model", "toy-clip", "--out", str(tmp_path / "p"), "--method", "elip"]) == 2
    assert "ranks modules with one of every-other-layer, magnitude, mope" in capsys.readouterr().err


def test_info_lists_every_registered_method_with_its_fields(capsys):
    from dataclasses import fields

    from vlprune.method_registry import KINDS, entries

    assert main(["info", "--methods"]) == 0
    out = capsys.readouterr().out
    names = {(e.kind, e.name) for e in entries()}
    assert {kind for kind, _ in names} == set(KINDS)  # every kind has at least one method
    assert {"elip", "trips", "evit", "tome", "random", "text-prune", "smarttrim", "mope", "taylor"} <= {
        n for _, n in names}
    for entry in entries():
        assert f"  {entry.name}" in out
        for f in fields(entry.config):
            if f.init and f.name not in entry.preset:
                assert f"      {f.name} = " in out, (entry.name, f.name)


def test_eval_says_when_a_method_costs_more_than_the_base(capsys):
    assert main(["eval", "--model", "toy-clip", "--method", "elip", "--data", "toyworld:val:8"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "more than the base model's" in line]
    assert len(warned) == 1 and warned[0].startswith("vlprune: warning: --method elip costs")
    assert main(["eval", "--model", "toy-clip", "--method", "elip", "--set", "mode=cheap", "--data",
                 "toyworld:val:8"]) == 0
    assert "more than the base" not in capsys.readouterr().err


def test_train_with_elip_set_records_its_token_schedule(tmp_path, tokenizer):
    import torch

    import vlprune
    from helpers.tiny import tiny_clip_config
    from vlprune.reduce import ELIPConfig

    torch.manual_seed(0)
    model_dir = vlprune.save(vlprune.build_model(tiny_clip_config()), tmp_path / "tiny", tokenizer)
    out = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--out", str(out), "--steps", "2", "--batch-size", "4",
                 "--warmup-steps", "0", "--train-size", "16", "--method", "elip", "--set", "stages=[1,1]",
                 "--set", "keep=[0.5]", "--set", "mode=cheap"]) == 0
    record = json.loads((out / "method.json").read_text())
    expected = ELIPConfig(stages=(1, 1), keep=(0.5,), mode="cheap")
    assert record["config"]["keep"] == [0.5] and record["config"]["stages"] == [1, 1]
    assert record["token_schedule"] == [list(p) for p in expected.schedule(tiny_clip_config().vision)]
    assert record["token_schedule"] != [list(p) for p in ELIPConfig(stages=(1, 1), keep=(0.9,), mode="cheap")
                                        .schedule(tiny_clip_config().vision)]
