"""The pruning recipes end to end on a tiny model, and ``vlprune prune``."""

from __future__ import annotations

import json

import pytest
import torch

import vlprune
from helpers.tiny import tiny_clip_config
from vlprune.cli import main
from vlprune.structured.budget import target_count
from vlprune.structured.config import PruneConfig
from vlprune.train.prune_recipe import run_recipe

SMALL = {"val_pairs": 16, "grad_pairs": 8, "batch_size": 8, "distill_steps": 1, "distill_batch": 4, "groups": 4}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 4})).eval()


def test_finetune_recipe_goes_width_distil_depth_distil(model, tokenizer, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PruneConfig(target_params=0.3, **SMALL)
    result = run_recipe(model, tokenizer, cfg, tmp_path, evaluate=lambda m: {"params": m.num_params()},
                        progress=False)
    assert [s["step"] for s in result.steps] == ["base", "width", "distil-width", "depth", "distil-depth"]
    assert result.model.num_params("vision") <= target_count(model, "vision", 0.3)
    assert result.model.config.text == model.config.text
    assert result.steps[1]["eval"] == {"params": result.steps[1]["params"]}
    assert [t.info["step"] for t in result.tables] == ["width", "depth"]
    assert len(result.tables[1].layers) == 4 and result.tables[0].heads is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input model is untouched


def test_pretrain_recipe_prunes_both_towers_at_once(model, tokenizer, tmp_path):
    cfg = PruneConfig(stage="pretrain", tower="both", target_params=0.4, method="magnitude", **SMALL)
    result = run_recipe(model, tokenizer, cfg, tmp_path, progress=False)
    steps = [s["step"] for s in result.steps]
    assert steps[-1] == "distil-all" and steps.count("distil-all") == 1 and "distil-width" not in steps
    for tower in ("vision", "text"):
        assert result.model.num_params(tower) <= target_count(model, tower, 0.4)
    assert [t.info["step"] for t in result.tables] == ["depth", "depth", "width", "width"]


def test_every_other_layer_prunes_depth_only(model, tokenizer, tmp_path):
    cfg = PruneConfig(method="every-other-layer", target_params=0.6, **SMALL)
    result = run_recipe(model, tokenizer, cfg, tmp_path, progress=False)
    vision = result.model.config.vision
    assert list(vision.layer_map) == [0, 2] and list(vision.num_heads) == [4, 4]


def test_target_one_removes_nothing(model, tokenizer, tmp_path):
    result = run_recipe(model, tokenizer, PruneConfig(target_params=1.0, method="random", **SMALL), tmp_path,
                        progress=False)
    assert [s["step"] for s in result.steps] == ["base"]
    assert result.model.num_params() == model.num_params()


def test_cli_prune_writes_a_loadable_smaller_model(model, tokenizer, tmp_path, capsys):
    source = vlprune.save(model, tmp_path / "base", tokenizer)
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(source), "--out", str(out), "--method", "taylor", "--target-params", "0.5",
                 "--val-pairs", "16", "--grad-pairs", "8", "--distill-steps", "1", "--distill-batch", "4",
                 "--groups", "4", "--eval-pairs", "8"])
    assert code == 0, capsys.readouterr().err
    small = vlprune.load(out / "model")
    assert small.num_params("vision") <= target_count(model, "vision", 0.5)
    report = json.loads((out / "prune.json").read_text())
    assert report["config"]["method"] == "taylor" and "eval" in report["steps"][-1]
    assert sorted(p.name for p in (out / "cost_tables").iterdir()) == ["0-vision-width.json"]
    assert "saved" in capsys.readouterr().out
    assert main(["prune", "--model", str(source), "--out", str(out)]) == 2
    assert "already holds a pruning run" in capsys.readouterr().err


def test_cli_prune_reports_impossible_targets_in_one_line(model, tokenizer, tmp_path, capsys):
    source = vlprune.save(model, tmp_path / "base", tokenizer)
    code = main(["prune", "--model", str(source), "--out", str(tmp_path / "x"), "--target-params", "0"])
    assert code == 2 and "target_params" in capsys.readouterr().err
    code = main(["prune", "--model", str(source), "--out", str(tmp_path / "y"), "--target-params", "0.01",
                 "--method", "every-other-layer", "--val-pairs", "16", "--grad-pairs", "8", "--distill-steps", "0"])
    assert code == 2 and "smallest reachable" in capsys.readouterr().err


def test_cli_prune_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in ("mope", "magnitude", "taylor", "every-other-layer", "random", "pretrain"))


def test_cache_shares_the_original_model_tables_between_budgets(model, tokenizer, tmp_path, monkeypatch):
    import vlprune.train.prune_recipe as recipe

    calls = []
    real = recipe.score_table
    monkeypatch.setattr(recipe, "score_table", lambda *a: calls.append(a[2:4]) or real(*a))
    cache: dict = {}
    first = run_recipe(model, tokenizer, PruneConfig(target_params=0.6, **SMALL), tmp_path / "a", progress=False,
                       cache=cache)
    second = run_recipe(model, tokenizer, PruneConfig(target_params=0.3, **SMALL), tmp_path / "b", progress=False,
                        cache=cache)
    assert second.tables[0].heads == first.tables[0].heads
    assert calls.count(("vision", ("head", "group"))) == 1  # the width table of the original model: once
    assert calls.count(("vision", ("layer",))) == 1         # the depth table of the width-pruned model: not cached
