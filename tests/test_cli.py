"""The command line, in process: info, eval (CLIP_benchmark JSON with costs), one-line user errors, --help."""

from __future__ import annotations

import json

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config, tiny_fusion_config
from vlprune.cli import build_parser, main
from vlprune.models.flops import model_gflops

ZERO_INIT_WARNING = "ignore:Initializing zero-element tensors:UserWarning"


@pytest.fixture
def saved_clip(tmp_path, tokenizer):
    torch.manual_seed(0)
    cfg = tiny_clip_config(vision={"num_heads": [4, 0], "intermediate_size": [64, 24], "layer_map": [0, 3]})
    return vlprune.save(vlprune.build_model(cfg), tmp_path / "tiny-clip", tokenizer)


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_info_prints_per_layer_lines(saved_clip, capsys):
    assert main(["info", str(saved_clip)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny-clip: kind=clip params=")
    assert "    layer 0 (orig 0): heads 4, mlp 64\n" in out
    assert "    layer 1 (orig 3): heads 0, mlp 24\n" in out     # the vision tower's pruned layer
    assert out.count("    layer ") == 4                          # 2 vision + 2 text layers
    gflops = model_gflops(vlprune.load(saved_clip).config)
    assert f"vision_gflops: {gflops['vision_gflops']:.4f}" in out


def test_info_of_a_registered_architecture_and_fusion_layers(capsys):
    assert main(["info", "toy-fusion"]) == 0
    out = capsys.readouterr().out
    assert "kind=fusion" in out and "fusion_gflops" in out
    assert out.count("+cross-attention") == 2


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_eval_retrieval_writes_clip_benchmark_json(saved_clip, tmp_path, capsys):
    out_file = tmp_path / "results" / "r.json"
    code = main(["eval", "--model", str(saved_clip), "--task", "retrieval", "--data", "toyworld:val:32",
                 "--out", str(out_file), "--batch-size", "16"])
    assert code == 0
    result = json.loads(out_file.read_text())
    assert json.loads(capsys.readouterr().out) == result
    metrics = result["metrics"]
    assert result["task"] == "zeroshot_retrieval" and result["dataset"] == "toyworld:val" and metrics["pairs"] == 32
    assert result["data"] == "toyworld:val:32" and result["model"] == result["pretrained"] == "tiny-clip"
    for key in ("image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@5",
                "text_retrieval_recall@10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["image_retrieval_recall@1"] <= metrics["image_retrieval_recall@5"] <= \
        metrics["image_retrieval_recall@10"]
    assert metrics["image_retrieval_ceiling@1"] >= 0.9
    costs = result["costs"]
    config = vlprune.load(saved_clip).config
    expected = model_gflops(config, text_length=40)
    assert costs["vision_gflops"] == pytest.approx(expected["vision_gflops"]) and costs["vision_gflops"] > 0
    assert costs["text_gflops"] == pytest.approx(expected["text_gflops"])
    assert costs["params"] == vlprune.load(saved_clip).num_params()


def test_eval_fusion_retrieval_and_vqa(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = vlprune.build_model(tiny_fusion_config(num_answers=len(vlprune.data.toyworld.ANSWERS)))
    directory = vlprune.save(model, tmp_path / "fusion", tokenizer)
    assert main(["eval", "--model", str(directory), "--data", "toyworld:val:12", "--rerank-k", "4",
                 "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["metrics"]["rerank_k"] == 4 and "first_stage_image_retrieval_recall@1" in result["metrics"]
    assert 0.0 <= result["metrics"]["text_retrieval_recall@1"] <= 1.0
    assert result["costs"]["fusion_gflops"] > 0
    assert main(["eval", "--model", str(directory), "--task", "vqa", "--data", "toyworld:val:12",
                 "--out", str(tmp_path / "v.json")]) == 0
    vqa = json.loads((tmp_path / "v.json").read_text())["metrics"]
    assert 0.0 <= vqa["vqa_accuracy"] <= 1.0 and vqa["questions"] == 12


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--model", "no-such-model"], "no-such-model"),
    (["info", "no-such-model"], "no-such-model"),
    (["eval", "--model", "vit-b16-clip"], "create_model"),
])
def test_user_errors_are_one_line_with_exit_code_2(argv, needle, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlprune: error: ") and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_bad_data_spec_and_corrupt_checkpoint_are_user_errors(saved_clip, capsys):
    assert main(["eval", "--model", str(saved_clip), "--data", "coco:val"]) == 2
    assert capsys.readouterr().err.startswith("vlprune: error: --data 'coco:val'")
    (saved_clip / "model.safetensors").write_bytes(b"")
    assert main(["info", str(saved_clip)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlprune: error: ") and "model.safetensors" in err and len(err.strip().splitlines()) == 1


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in _subcommands()])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: vlprune" in capsys.readouterr().out


def test_subcommands_exist():
    assert {"train", "eval", "info", "demo"} <= set(_subcommands())


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--task", "captioning", "--model", "x"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.filterwarnings(ZERO_INIT_WARNING)
def test_eval_serves_5000_pairs_and_records_the_count(saved_clip, tmp_path, capsys):
    out_file = tmp_path / "r.json"
    assert main(["eval", "--model", str(saved_clip), "--data", "toyworld:val:5000", "--out", str(out_file),
                 "--batch-size", "500"]) == 0
    metrics = json.loads(out_file.read_text())["metrics"]
    assert metrics["pairs"] == 5000 and metrics["images"] == 5000
    assert 0.0 < metrics["image_retrieval_ceiling@1"] < 1.0  # at 5,000 pairs some captions fit several images
