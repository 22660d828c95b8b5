"""``vlprune train --method smarttrim`` end to end on a tiny model (ITM: its VQA head is smaller than the toy
world's answer set), its one-line error for a bad target, and ``vlprune eval`` of a SmartTrim checkpoint (trimmers
on, GFLOPs per instance; no token-reduction method on top)."""

from __future__ import annotations

import json

import pytest
import torch

import vlprune
from vlprune.cli import main
from vlprune.data.toyworld import ToyWorld
from vlprune.eval.smarttrim import static_scorer, trim_scorer, vqa_run
from vlprune.trim import SmartTrim, SmartTrimConfig
from vlprune.trim.io import load_trimmed, save_trimmed


def _checkpoint(fusion_model, tokenizer, tmp_path):
    return str(vlprune.save(fusion_model, tmp_path / "tiny", tokenizer))


def test_train_smarttrim_from_the_cli(fusion_model, tokenizer, tmp_path):
    args = ["train", "--model", _checkpoint(fusion_model, tokenizer, tmp_path), "--out", str(tmp_path / "run"),
            "--method", "smarttrim", "--tasks", "itm", "--steps", "2", "--batch-size", "4", "--train-size", "8",
            "--warmup-steps", "0", "--target-vision", "0.4", "--set", "temperature=0.7"]
    assert main(args) == 0
    trim = load_trimmed(tmp_path / "run" / "model")
    assert (trim.config.target_vision, trim.config.temperature) == (0.4, 0.7)


def test_bad_target_is_one_line_naming_it(fusion_model, tokenizer, tmp_path, capsys):
    args = ["train", "--model", _checkpoint(fusion_model, tokenizer, tmp_path), "--out", str(tmp_path / "run"),
            "--method", "smarttrim", "--tasks", "vqa", "--target-heads", "1.5"]
    assert main(args) == 2
    assert "SmartTrimConfig.target_heads=1.5 is invalid" in capsys.readouterr().err


def _trimmed_checkpoint(fusion_model, tokenizer, tmp_path) -> str:
    """A SmartTrim checkpoint whose trimmers drop tokens and heads (random weights: decisions vary per input)."""
    trim = SmartTrim(fusion_model, SmartTrimConfig(target_vision=0.4))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trim.trimmers.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return str(save_trimmed(trim.eval(), tmp_path / "trimmed", tokenizer))


@pytest.mark.parametrize("task", ["vqa", "retrieval"])
def test_eval_of_a_trimmed_checkpoint_runs_with_the_trimmers_on(fusion_model, tokenizer, tmp_path, capsys, task):
    checkpoint = _trimmed_checkpoint(fusion_model, tokenizer, tmp_path)
    out = tmp_path / "result.json"
    assert main(["eval", "--model", checkpoint, "--task", task, "--data", "toyworld:val:12", "--rerank-k", "4",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    trim = load_trimmed(checkpoint)
    smarttrim = result["smarttrim"]
    assert smarttrim["enabled"] and smarttrim["config"] == trim.config.to_dict()
    stats = smarttrim["gflops"]
    assert set(stats) == {"mean", "p10", "p50", "p90"} and stats["p10"] <= stats["p50"] <= stats["p90"]
    assert result["costs"]["params"] == fusion_model.num_params() + trim.trimmer_params()
    if task == "vqa":
        world = ToyWorld("val", image_size=fusion_model.config.vision.image_size)
        trimmed = vqa_run(trim_scorer(trim, "vqa"), fusion_model.config.vision, tokenizer, world, 12)
        untrimmed = vqa_run(static_scorer(fusion_model, "vqa"), fusion_model.config.vision, tokenizer, world, 12)
        assert stats == {k: trimmed["gflops"][k] for k in stats} and stats["mean"] < untrimmed["gflops"]["mean"]
        assert result["metrics"]["vqa_accuracy"] == trimmed["vqa_accuracy"] and result["metrics"]["questions"] == 12
    else:
        assert result["metrics"]["rerank_k"] == 4 and "image_retrieval_recall@1" in result["metrics"]


@pytest.mark.parametrize("args,message", [(["--method", "evit"], "--method evit: "),
                                          (["--task", "zeroshot"], "--task 'zeroshot': a SmartTrim checkpoint"),
                                          (["--task", "retrieval", "--rerank-k", "0"], "--rerank-k 0: SmartTrim")])
def test_eval_of_a_trimmed_checkpoint_refuses_what_does_not_apply(fusion_model, tokenizer, tmp_path, capsys, args,
                                                                  message):
    checkpoint = _trimmed_checkpoint(fusion_model, tokenizer, tmp_path)
    assert main(["eval", "--model", checkpoint, "--data", "toyworld:val:4", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlprune: error: " + message) and err.count("\n") == 1
