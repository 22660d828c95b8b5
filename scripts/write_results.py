"""Evaluate the bundled models and write docs/results.md + docs/results.json (every number in them comes
from this script; re-run it after retraining: `.venv/bin/python scripts/write_results.py`; `--render` only
re-writes results.md from results.json, re-reading the training logs in runs/bundled/ when present)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

import vlprune
from vlprune.data.toyworld import GRID, ToyWorld, ceiling, object_extent
from vlprune.eval.binding import ATTRIBUTES, binding_accuracy
from vlprune.eval.cell_probe import cell_probe_accuracy
from vlprune.eval.evaluate import evaluate
from vlprune.eval.grounding import question_cell_attention
from vlprune.models.io import weights_sha256
from vlprune.registry import model_config

ROOT = Path(__file__).resolve().parents[1]
JOBS = [("toy-clip", "retrieval", 0), ("toy-clip", "zeroshot", 0), ("toy-fusion", "retrieval", 16),
        ("toy-fusion", "retrieval", 0), ("toy-fusion", "vqa", 0)]
REPRODUCE = """```bash
make venv                                   # .venv with torch 2.13.0 (CPU)
scripts/train_bundled.sh                    # trains toy-clip, then toy-fusion (resumable), copies into assets/
.venv/bin/python scripts/write_results.py   # this page
```"""


def training_summary(run: Path) -> dict:
    log = run / "metrics.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if not lines:
        return {}
    last = lines[-1]
    seconds = [line["sec_per_step"] for line in lines if "sec_per_step" in line]
    where = [line["scene_where"] for line in lines if "scene_where" in line]
    return {"steps": last["step"], "final_loss": last["loss"],
            "median_sec_per_step": sorted(seconds)[len(seconds) // 2] if seconds else None,
            "scene_where_first": where[0] if where else None, "scene_where_last": where[-1] if where else None}


def main() -> None:
    if sys.argv[1:] == ["--render"]:  # re-write results.md from results.json (training logs re-read) without
        docs = ROOT / "docs"          # evaluating again
        payload = json.loads((docs / "results.json").read_text())
        payload["training"] = _training(payload["training"])
        (docs / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        (docs / "results.md").write_text(render(payload))
        return
    torch.set_num_threads(2)
    results = []
    for name, task, rerank_k in JOBS:
        result = evaluate(vlprune.load(name), vlprune.load_tokenizer(name), task, "toyworld:val:1000",
                          rerank_k=rerank_k)
        results.append(result)
    world_ceiling = ceiling(ToyWorld("val"), 1000)
    bundled = {name: (vlprune.load(name), vlprune.load_tokenizer(name)) for name in ("toy-clip", "toy-fusion")}
    binding = {name: binding_accuracy(model, tokenizer, ToyWorld("val"), 1000)
               for name, (model, tokenizer) in bundled.items()}
    blind_ceilings = {"+".join(blind): ceiling(ToyWorld("val"), 1000, blind) for blind in BLIND}
    cell_probe = {name: cell_probe_accuracy(model, ToyWorld("train"), ToyWorld("val"))
                  for name, (model, _) in bundled.items()}
    grounding = question_cell_attention(*bundled["toy-fusion"], ToyWorld("val"), 1000)
    previous = ROOT / "docs" / "results.json"
    runs = _training(json.loads(previous.read_text())["training"] if previous.exists() else {})
    machine = {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine()}
    payload = {"machine": machine, "ceiling_val_1000": world_ceiling, "training": runs, "results": results,
               "binding_val_1000": binding, "blind_ceilings_val_1000": blind_ceilings, "cell_probe": cell_probe,
               "question_cell_attention_val_1000": grounding}
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (docs / "results.md").write_text(render(payload))
    print((docs / "results.md").read_text())


def _training(recorded: dict) -> dict:
    """Each stage's summary from its log in runs/bundled/, or as ``recorded`` when the log is not here (a fresh
    clone has no runs/)."""
    runs = {stage: training_summary(ROOT / "runs" / "bundled" / stage) for stage in STAGES}
    return {k: v or recorded.get(k, {}) for k, v in runs.items()}


def _task(result: dict) -> str:
    """Our task name of a result, whether written before or after results took CLIP_benchmark's task names."""
    return {"zeroshot_retrieval": "retrieval", "zeroshot_classification": "zeroshot"}.get(result["task"],
                                                                                       result["task"])


def _row(result: dict) -> str:
    m, c = result["metrics"], result["costs"]
    if _task(result) == "retrieval":
        score = (f"IR@1 {m['image_retrieval_recall@1']:.3f} · TR@1 {m['text_retrieval_recall@1']:.3f} · "
                 f"IR@5 {m['image_retrieval_recall@5']:.3f} · TR@5 {m['text_retrieval_recall@5']:.3f} · "
                 f"semantic IR@1 {m['semantic_image_retrieval_recall@1']:.3f}")
        task = "retrieval" + (f" (ITM re-rank top-{m['rerank_k']})" if "rerank_k" in m else " (ITC only)")
    elif _task(result) == "zeroshot":
        score = f"acc1 {m['acc1']:.3f} · acc5 {m['acc5']:.3f} · mean per-class recall {m['mean_per_class_recall']:.3f}"
        task = f"zero-shot ({m['classes']} classes, {m['images']} images)"
    else:
        by_type = ", ".join(f"{k} {v:.2f}" for k, v in sorted(m["vqa_accuracy_by_type"].items()))
        score = f"accuracy {m['vqa_accuracy']:.3f} ({by_type})"
        task = f"VQA ({m['questions']} questions)"
    return (f"| {result['model']} | {task} | {score} | {c['params'] / 1e6:.2f} M | {c['vision_gflops']:.3f} | "
            f"{c['text_gflops']:.3f} |")


BLIND = (("shape",), ("cell",), ("shape", "cell"))  # attributes a model could fail to see, for blind ceilings
STAGES = ("toy-clip-v10", "toy-clip-v11", "toy-fusion-pretrain-v4", "toy-fusion-vqa-v5")
PAGES = {"token-reduction.md": "Token reduction (ELIP, TRIPS, EViT, ToMe, random): inference at matched GFLOPs, "
                               "speed, training cost and memory, the papers' claims",
         "mope.md": "MoPE-CLIP structured pruning vs magnitude / Taylor / every-other-layer / random",
         "smarttrim.md": "SmartTrim adaptive trimming: accuracy vs mean GFLOPs, batch-1 latency, adaptivity",
         "smarttrim-speed.md": "SmartTrim at batch 1: the trimmers' scoring overhead vs the saving of removal, "
                               "toy-fusion and ALBEF-base size",
         "port.md": "Speed of our converted CLIP ViT-B/16 vision tower vs transformers' CLIPVisionModel",
         "scene-loss.md": "Scene-supervision loss, mean vs balanced: shape in the patch tokens (cell probe), "
                          "retrieval and binding under ITC",
         "pooling.md": "Image pooling, [CLS] vs mean of the patch tokens: retrieval and binding of toy-clip under ITC",
         "grounding.md": "Grounded VQA: toy-fusion's stage 3 without and with attention supervision (ground) and the "
                         "fused object read-out (ground_object)"}

FLOOR = {"toy-clip retrieval R@1 (both directions)": 0.50, "toy-fusion VQA accuracy": 0.70}


def floor_rows(results: list[dict]) -> list[str]:
    """The quality floor the bundled models must reach, against what they reach."""
    clip = next(r for r in results if r["model"] == "toy-clip" and _task(r) == "retrieval")["metrics"]
    vqa = next(r for r in results if r["task"] == "vqa")["metrics"]
    reached = {"toy-clip retrieval R@1 (both directions)": min(clip["image_retrieval_recall@1"],
                                                              clip["text_retrieval_recall@1"]),
               "toy-fusion VQA accuracy": vqa["vqa_accuracy"]}
    return [f"| {name} | {FLOOR[name]:.2f} | {value:.3f} | {'met' if value >= FLOOR[name] else '**not met**'} |"
            for name, value in reached.items()]


# pages measured on the bundled weights
ON_BUNDLED = ("token-reduction.md", "mope.md", "smarttrim.md", "scene-loss.md", "pooling.md", "grounding.md")


def page_status(page: str) -> str:
    """'' if the page was measured on the bundled models as shipped (the SHA-256 its JSON records), else why not."""
    md = ROOT / "docs" / "results" / page
    if not md.exists():
        return " — *not generated yet*"
    if page not in ON_BUNDLED:
        return ""
    recorded = json.loads(md.with_suffix(".json").read_text()).get("model_sha256")
    if recorded is None:
        return " — **measured on an earlier bundled model** (its JSON records none): re-run its script to refresh it"
    stale = sorted(name for name, digest in recorded.items() if digest != weights_sha256(name))
    return (f" — **measured on an earlier {', '.join(stale)}**: re-run its script to refresh it" if stale else "")


def port_section() -> list[str]:
    """The conversion's speed against transformers, from docs/results/port.json (benchmarks/port_speed.py)."""
    source = ROOT / "docs" / "results" / "port.json"
    if not source.exists():
        return []
    rows = [f"| {r['device']} | {r['threads']} | {r['batch']} | {r['images_per_s']['vlprune']:.2f} | "
            f"{r['images_per_s']['transformers']:.2f} | {r['speedup_vs_transformers']:.2f}× | {r['note']} |"
            for r in json.loads(source.read_text())]
    return ["## Speed of the port (converted CLIP ViT-B/16 image tower vs transformers' CLIPVisionModel)", "",
            "Same random weights in one process, A/B rounds alternated (`benchmarks/port_speed.py`; details in "
            "[results/port.md](results/port.md)). Target: ≥ 1.0×.", "",
            "| device | threads | batch | vlprune img/s | transformers img/s | ratio | conditions |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def limits_section(payload: dict) -> list[str]:
    """What the models miss: the R@1 a model blind to shape / position could reach, and what the patch tokens
    carry (cell probe)."""
    if "blind_ceilings_val_1000" not in payload:
        return []
    ceilings = payload["blind_ceilings_val_1000"]
    vision = model_config("toy-clip").vision
    image, patch = vision.image_size, vision.patch_size
    probes = payload["cell_probe"]
    return [
        "## What limits retrieval", "",
        "The best R@1 on the same 1,000 pairs for a model that cannot see some attributes "
        "(`ceiling(..., blind=...)`: images that differ only there are ties), beside the full ceiling:", "",
        "| blind to | text→image | image→text |", "|---|---|---|",
        f"| nothing | {payload['ceiling_val_1000']['image_retrieval_ceiling@1']:.3f} | "
        f"{payload['ceiling_val_1000']['text_retrieval_ceiling@1']:.3f} |",
        *[f"| {name.replace('+', ' and ')} | {c['image_retrieval_ceiling@1']:.3f} | "
          f"{c['text_retrieval_ceiling@1']:.3f} |" for name, c in ceilings.items()], "",
        "What the image tower's final patch tokens carry (`vlprune.eval.cell_probe`: linear probes on each occupied "
        "cell's pooled tokens, fit on 2,000 train scenes, scored on the 1,000 val scenes; chance 0.125 / 0.2 / 0.5):",
        "",
        "| model | colour | shape | shape, small objects | shape, big objects | size |", "|---|---|---|---|---|---|",
        *[f"| {name} | {p['probe_colour']:.3f} | {p['probe_shape']:.3f} | {p['probe_shape_small']:.3f} | "
          f"{p['probe_shape_big']:.3f} | {p['probe_size']:.3f} |" for name, p in probes.items()], "",
        "A model that sees colour and size but neither shape nor position is capped at the last ceiling row. On "
        f"the toy models' {image}-px images a small object is {object_extent('small', image)} px wide and a big one "
        f"{object_extent('big', image)} px, drawn at a random offset in a {image // GRID}-px cell, with "
        f"{patch}-px patches.", "",
    ]


def grounding_section(payload: dict) -> list[str]:
    """Where toy-fusion looks when it answers a question about one object (``vlprune.eval.grounding``)."""
    if "question_cell_attention_val_1000" not in payload:
        return []
    shares, accuracy = payload["question_cell_attention_val_1000"], _vqa_by_type(payload)
    return ["## Where toy-fusion looks when it answers", "",
            "Share of the fusion layers' [CLS] cross-attention (mean over layers and heads) on the cell of the object "
            "a validation question is about (`vlprune.eval.grounding`; attention spread evenly gives 4/65 ≈ 0.06), "
            "beside the accuracy on that question type:", "",
            "| question type | attention share on its cell | VQA accuracy |", "|---|---|---|",
            *[f"| {kind} | {share:.3f} | {accuracy.get(kind, float('nan')):.3f} |"
              for kind, share in shares.items() if kind != "all"],
            f"| all four | {shares['all']:.3f} | |", ""]


def _vqa_by_type(payload: dict) -> dict[str, float]:
    return next(r for r in payload["results"] if r["task"] == "vqa")["metrics"]["vqa_accuracy_by_type"]


def _where(summary: dict) -> str:
    first, last = summary.get("scene_where_first"), summary.get("scene_where_last")
    return "—" if first is None else f"{first:.3f} → {last:.3f}"


def render(payload: dict) -> str:
    ceil = payload["ceiling_val_1000"]
    lines = [
        "# Results", "",
        "Written by `scripts/write_results.py` (numbers are never typed by hand); raw values in `results.json`.", "",
        "## Bundled models on the toy world (validation split, 1,000 pairs)", "",
        f"Best achievable R@1 on these pairs (some captions truly describe several images): text→image "
        f"{ceil['image_retrieval_ceiling@1']:.3f}, image→text {ceil['text_retrieval_ceiling@1']:.3f}.", "",
        "| model | task | score | params | vision GFLOPs/img | text GFLOPs/text |",
        "|---|---|---|---|---|---|",
        *[_row(r) for r in payload["results"]], "",
        "GFLOPs: analytic counter (`vlprune.models.flops`), 2 × multiply-accumulates, attention matmuls included, "
        "text at the padded length 40. IR = image retrieval (text→image), TR = text retrieval (image→text), "
        "CLIP_benchmark's naming.", "",
        "## Attribute binding (does a caption pick its own image over a twin?)", "",
        "Each of the first 1,000 validation scenes against its twin (`ToyWorld.twin`: one attribute of one "
        "mentioned object changed; `vlprune.eval.binding`), scored by ITC embedding similarity. Chance is 0.5; "
        "a model that learned colour only scores ~1.0 / 0.5 / 0.5 / 0.5.", "",
        "| model | " + " | ".join(ATTRIBUTES) + " | mean |", "|---|" + "---|" * (len(ATTRIBUTES) + 1),
        *[f"| {name} | " + " | ".join(f"{b[f'binding_{a}']:.3f}" for a in ATTRIBUTES) + f" | {b['binding_mean']:.3f} |"
          for name, b in payload["binding_val_1000"].items()], "",
        *limits_section(payload), *grounding_section(payload), "## Quality floor", "",
        "The bundled models must be strong enough that a one-point loss from pruning is measurable.", "",
        "| requirement | floor | reached | |", "|---|---|---|---|", *floor_rows(payload["results"]), "",
        "## Training runs", "",
        "| stage | steps | final loss | median s/step | position probe loss, first → last log |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v.get('steps', '—')} | {v.get('final_loss', float('nan')):.3f} | "
          f"{v.get('median_sec_per_step') or float('nan'):.2f} | {_where(v)} |"
          for k, v in payload["training"].items() if v], "",
        "Stages in the order of `scripts/train_bundled.sh`, exactly its commands. Position probe: `scene_where`, "
        "the cross-entropy of a linear read-out of each cell's row and column from that cell's patch tokens "
        "(chance = ln 4 ≈ 1.386; `vlprune.train.scene`); the probes are dropped at save, so every stage starts a "
        "fresh one, and its fall within the stage shows that the tokens it reads carry position. What was tried to "
        "lift the models to the floor, and what "
        "each attempt measured, is in docs/training.md.", "",
        *port_section(), "## Other measured pages", "",
        *[f"- [{name}](results/{name}): {text}{page_status(name)}" for name, text in PAGES.items()], "",
        f"Machine: {payload['machine']}.", "",
        "## Reproduce", "", REPRODUCE, "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
