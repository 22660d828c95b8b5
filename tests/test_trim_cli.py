"""``vlprune train --method smarttrim`` end to end on a tiny model (ITM: its VQA head is smaller than the toy
world's answer set), and its one-line error for a bad target."""

from __future__ import annotations

import vlprune
from vlprune.cli import main
from vlprune.trim.train import load_trimmed


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
