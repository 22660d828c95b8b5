"""``vlprune eval --data`` on real dataset formats: the toy world exported as Karpathy JSON, webdataset shards, VQA v2
and an ImageFolder gives exactly the numbers of the ``toyworld:`` path on the same items; a converted transformers
CLIP with its own tokenizer evaluates through the CLI; results load in CLIP_benchmark's ``build`` layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers.reference import clip_processor, hf_clip, save_hf
from vlprune.cli import main
from vlprune.data.export import data_spec, export_toyworld
from vlprune.data.sources import expand_braces, parse_data

COUNT = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    """--data specs of the first COUNT val items (folder: zeroshot items) in every format."""
    root = tmp_path_factory.mktemp("exported")
    specs = {}
    for fmt in ("karpathy", "wds", "vqa", "folder"):
        out = export_toyworld(fmt, root / fmt, COUNT, "val", shard_size=16)
        specs[fmt] = data_spec(fmt, out, "val")
    return specs


def _eval(capsys, tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "r.json"
    assert main(["eval", *argv, "--out", str(out), "--batch-size", "16"]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


def _recalls(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if "recall" in k and not k.startswith("semantic")}


@pytest.mark.parametrize("fmt", ["karpathy", "wds"])
def test_exported_retrieval_sets_give_the_toyworld_numbers(exported, fmt, tmp_path, capsys):
    toy = _eval(capsys, tmp_path, "--model", "toy-clip", "--data", f"toyworld:val:{COUNT}")
    real = _eval(capsys, tmp_path, "--model", "toy-clip", "--data", exported[fmt])
    assert _recalls(real) == _recalls(toy) and len(_recalls(toy)) >= 7
    assert real["metrics"]["pairs"] == COUNT and real["dataset"].startswith(fmt)


def test_exported_vqa_v2_gives_the_toyworld_accuracy(exported, tmp_path, capsys):
    toy = _eval(capsys, tmp_path, "--model", "toy-fusion", "--task", "vqa", "--data", f"toyworld:val:{COUNT}")
    real = _eval(capsys, tmp_path, "--model", "toy-fusion", "--task", "vqa", "--data", exported["vqa"])
    assert real["metrics"]["vqa_accuracy"] == toy["metrics"]["vqa_accuracy"]
    assert real["metrics"]["vqa_accuracy_by_type"] == toy["metrics"]["vqa_accuracy_by_type"]
    assert real["metrics"]["questions"] == COUNT and real["metrics"]["out_of_vocabulary"] == 0


def test_exported_image_folder_gives_the_toyworld_zeroshot_accuracy(exported, tmp_path, capsys):
    root = parse_data(exported["folder"]).fields[0]
    toy = _eval(capsys, tmp_path, "--model", "toy-clip", "--task", "zeroshot", "--data", f"toyworld:zeroshot:{COUNT}")
    real = _eval(capsys, tmp_path, "--model", "toy-clip", "--task", "zeroshot", "--data", exported["folder"],
                 "--classnames", f"{root}/classnames.txt", "--templates", f"{root}/templates.txt")
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert real["metrics"][key] == pytest.approx(toy["metrics"][key], abs=1e-12), key
    assert real["task"] == "zeroshot_classification" and real["metrics"]["images"] == COUNT


def test_a_converted_transformers_clip_evaluates_on_exported_data(exported, tmp_path, capsys):
    model, tokenizer = hf_clip()
    source = save_hf(model, tokenizer, clip_processor(), tmp_path / "hf")
    assert main(["convert", str(source), "--out", str(tmp_path / "ours")]) == 0
    result = _eval(capsys, tmp_path, "--model", str(tmp_path / "ours"), "--data", exported["karpathy"], "--truncate")
    assert result["model"] == "ours" and result["metrics"]["pairs"] == COUNT
    assert 0.0 <= result["metrics"]["image_retrieval_recall@1"] <= 1.0


def _clip_benchmark_build(files: list[Path], output: Path) -> list[dict]:
    """What ``clip_benchmark build`` reads and writes (its main_build, restated): each JSON's ``metrics`` merged
    into its top-level fields, ``model_fullname`` = model + ' ' + pretrained, one CSV row per file."""
    rows, fieldnames = [], set()
    for path in files:
        data = json.loads(path.read_text())
        row = {**data["metrics"], **data}
        del row["metrics"]
        row["model_fullname"] = row["model"] + " " + row["pretrained"]
        fieldnames |= row.keys()
        rows.append(row)
    with output.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    with output.open() as f:
        return list(csv.DictReader(f))


def test_results_have_clip_benchmarks_layout(exported, tmp_path, capsys):
    files = []
    for task, data in (("retrieval", exported["karpathy"]), ("zeroshot", f"toyworld:zeroshot:{COUNT}")):
        files.append(tmp_path / f"{task}.json")
        assert main(["eval", "--model", "toy-clip", "--task", task, "--data", data, "--out", str(files[-1])]) == 0
    capsys.readouterr()
    for file in files:
        result = json.loads(file.read_text())
        assert {"dataset", "model", "pretrained", "task", "metrics", "language"} <= result.keys()
        assert isinstance(result["metrics"], dict) and result["language"] == "en"
    rows = _clip_benchmark_build(files, tmp_path / "benchmark.csv")
    assert [r["task"] for r in rows] == ["zeroshot_retrieval", "zeroshot_classification"]
    assert rows[0]["model_fullname"] == "toy-clip toy-clip" and float(rows[0]["image_retrieval_recall@1"]) >= 0
    assert float(rows[1]["acc1"]) >= 0 and rows[0]["dataset"].startswith("karpathy")


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("a-{008..011}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
    assert expand_braces("{x,y}-{0..1}") == ["x-0", "x-1", "y-0", "y-1"]
    with pytest.raises(ValueError, match="backwards"):
        expand_braces("s-{5..3}.tar")


@pytest.mark.parametrize("spec, words", [("coco:x", "unknown kind 'coco'"), ("karpathy:only-json", "karpathy:JSON"),
                                         ("vqa:q.json:a.json", "vqa:QUESTIONS_JSON"), ("wds:", "wds:SHARD_PATTERN")])
def test_bad_data_specs_name_the_grammar(spec, words, capsys):
    assert main(["eval", "--model", "toy-clip", "--data", spec]) == 2
    assert words in capsys.readouterr().err


def test_missing_shards_and_files_are_named(tmp_path, capsys):
    assert main(["eval", "--model", "toy-clip", "--data", f"wds:{tmp_path}/s-{{0..2}}.tar"]) == 2
    assert "3 of 3 shard(s) missing" in capsys.readouterr().err
    assert main(["eval", "--model", "toy-clip", "--data", f"karpathy:{tmp_path}/none.json:{tmp_path}"]) == 2
    assert "none.json" in capsys.readouterr().err


def test_imagenet_style_classnames_map_folders_to_names(exported, tmp_path, capsys):
    root = Path(parse_data(exported["folder"]).fields[0])
    names = (root / "classnames.txt").read_text().splitlines()
    (tmp_path / "wnids.txt").write_text("".join(f"{n.replace(' ', '_')}\t{n}\n" for n in names))
    plain = _eval(capsys, tmp_path, "--model", "toy-clip", "--task", "zeroshot", "--data", exported["folder"],
                  "--classnames", str(root / "classnames.txt"), "--templates", str(root / "templates.txt"))
    mapped = _eval(capsys, tmp_path, "--model", "toy-clip", "--task", "zeroshot", "--data", exported["folder"],
                   "--classnames", str(tmp_path / "wnids.txt"), "--templates", str(root / "templates.txt"))
    assert mapped["metrics"] == plain["metrics"]


def test_vqa_answer_vocabulary_beside_the_checkpoint(exported, tmp_path, capsys):
    import shutil

    from vlprune.data.toyworld import ANSWERS
    from vlprune.models.io import resolve

    shutil.copytree(resolve("toy-fusion"), tmp_path / "fusion")
    (tmp_path / "fusion" / "answers.json").write_text(json.dumps(["x" + a for a in ANSWERS]))
    result = _eval(capsys, tmp_path, "--model", str(tmp_path / "fusion"), "--task", "vqa", "--data", exported["vqa"])
    assert result["metrics"]["vqa_accuracy"] == 0.0 and result["metrics"]["out_of_vocabulary"] == COUNT
    (tmp_path / "fusion" / "answers.json").write_text(json.dumps(ANSWERS[:3]))
    assert main(["eval", "--model", str(tmp_path / "fusion"), "--task", "vqa", "--data", exported["vqa"]]) == 2
    assert "answer vocabulary has 3" in capsys.readouterr().err
