"""SmartTrim at batch 1: where the time goes, at toy size and at the paper's model size.

On the bundled toy-fusion, SmartTrim's hard-mask inference is *slower* than the untrimmed model at batch 1 while
doing half the FLOPs (docs/results/smarttrim.md). This script separates the two costs that could explain it, on
random weights (speed does not need trained ones) and the same random inputs for every run:

* ``trimmers, keep all``: learned trimmers scoring every token and head in every layer, but keeping everything
  (``init_logit`` large) — the scoring overhead alone;
* ``random @ targets``: tokens and heads removed at the target keep ratios with no trimmer network (the Random
  baseline's cheap scores) — the saving of removal, plus the cost of compacting the sequence.

Two architectures: ``toy-fusion``, and an ALBEF-base-sized fusion model (ViT-B/16 at 224 px: 196 patches + [CLS],
width 768; 12-layer width-768 BERT text encoder whose last 6 layers cross-attend) as in the SmartTrim paper.

    .venv/bin/python benchmarks/smarttrim_speed.py      # writes docs/results/smarttrim-speed.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

import vlprune
from vlprune.config import ModelConfig, TextConfig
from vlprune.eval.smarttrim import batch1_latency
from vlprune.registry import model_config
from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.flops import record_gflops
from vlprune.trim.model import SmartTrim

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"


def albef_base() -> ModelConfig:
    """ViT-B/16 image tower + BERT-base text encoder with cross-attention in its last 6 layers (ALBEF-base)."""
    vision = model_config("vit-b16-clip").vision
    text = TextConfig(flavour="bert", vocab_size=30522, max_length=40, width=768, num_layers=12, head_dim=64,
                      num_heads=12, intermediate_size=3072, pad_token_id=0, pre_norm=False, layer_norm_eps=1e-12,
                      cross_attention_layers=tuple(range(6, 12)), encoder_width=768)
    return ModelConfig(kind="fusion", vision=vision, text=text, embed_dim=256, num_answers=32, name="albef-base")


def runs(targets: tuple[float, float, float]) -> dict[str, tuple[SmartTrimConfig, str]]:
    """Label -> (trimmer config, forward mode)."""
    v, t, h = targets
    keep_all = SmartTrimConfig(target_vision=v, target_text=t, target_heads=h, init_logit=50.0)
    removal = SmartTrimConfig(target_vision=v, target_text=t, target_heads=h, tokens="random", heads="random")
    return {"base": (keep_all, "full"), "trimmers, keep all": (keep_all, "hard"),
            "random @ targets": (removal, "hard")}


def measure(config: ModelConfig, targets: tuple[float, float, float], count: int, question_length: int,
            seed: int = 0) -> dict:
    """Mean ms per input at batch 1 (``batch1_latency``: every run on the same inputs in turn) and mean analytic
    GFLOPs per input (trimmers included) of every run."""
    torch.manual_seed(seed)
    model = vlprune.build_model(config).eval()
    trims = {label: (SmartTrim(model, trim_config).eval(), mode)
             for label, (trim_config, mode) in runs(targets).items()}
    for trim, _ in trims.values():
        trim.generator = torch.Generator().manual_seed(seed)
    vision = config.vision
    inputs = [(torch.randn(1, vision.channels, vision.image_size, vision.image_size),
               torch.randint(5, config.text.vocab_size, (1, question_length)),
               torch.ones(1, question_length, dtype=torch.long)) for _ in range(count)]
    runs_by_label = {label: (lambda i, t=trim, m=mode: t(*inputs[i], m)) for label, (trim, mode) in trims.items()}
    with torch.inference_mode():
        ms = batch1_latency(runs_by_label, count, warmup=2)
        gflops = {label: float(np.mean([record_gflops(trim, trim(*x, "full" if mode == "full" else "masked").record)[0]
                                        for x in inputs]))
                  for label, (trim, mode) in trims.items()}
    rows = {label: {"ms": ms[label], "gflops": gflops[label], "measured_speedup": ms["base"] / ms[label],
                    "ideal_speedup": gflops["base"] / gflops[label]} for label in trims}
    return {"model": config.name, "targets": targets, "inputs": count, "question_length": question_length,
            "trimmer_params": trims["base"][0].trimmer_params(), "model_params": model.num_params(), "rows": rows}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "smarttrim-speed.json").write_text(json.dumps(result, indent=2) + "\n")
    v, t, h = result["targets"]
    lines = ["# SmartTrim at batch 1: scoring overhead vs removal saving", "",
             "Written by `benchmarks/smarttrim_speed.py` (numbers are never typed by hand); raw values in "
             "`smarttrim-speed.json`. Random weights and inputs; hard masks (removed tokens leave the sequence, "
             "removed heads are not computed). GFLOPs: analytic, 2 × multiply-accumulates incl. attention matmuls "
             "and the trimmers, per image-question pair.", "",
             f"`trimmers, keep all`: the learned trimmers score every token and head but keep everything (the "
             f"scoring overhead alone). `random @ targets`: tokens and heads removed at keep ratios "
             f"{v:g} (image tokens) / {t:g} (text tokens) / {h:g} (heads) without a trimmer network (the saving of "
             f"removal, compaction included). A trained SmartTrim pays both.", "",
             "| model | params | run | ms / input | GFLOPs | measured speedup | FLOP-ideal speedup |",
             "|---|---|---|---|---|---|---|"]
    for arch in result["archs"]:
        for label, row in arch["rows"].items():
            params = f"{arch['model_params'] / 1e6:.1f} M (+{arch['trimmer_params'] / 1e6:.2f} M trimmers)"
            lines.append(f"| {arch['model']} | {params} | {label} | {row['ms']:.2f} | {row['gflops']:.3f} | "
                         f"{row['measured_speedup']:.2f} | {row['ideal_speedup']:.2f} |")
    machine = result["machine"]
    lines += ["", f"{result['archs'][0]['inputs']} inputs per model, question length "
              f"{', '.join(str(a['question_length']) for a in result['archs'])} tokens; machine: "
              f"{machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}. One run, every model timed "
              f"input by input in turn.", ""]
    (out / "smarttrim-speed.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="inputs timed per model")
    parser.add_argument("--targets", default="0.5,0.7,0.8", help="keep ratios: image tokens, text tokens, heads")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    targets = tuple(float(x) for x in args.targets.split(","))
    if len(targets) != 3:
        raise SystemExit(f"--targets {args.targets!r}: expected three keep ratios (image tokens, text tokens, heads)")
    archs = [measure(model_config("toy-fusion"), targets, args.count, question_length=10),
             measure(albef_base(), targets, args.count, question_length=20)]
    machine = {"cpu": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    write({"targets": targets, "archs": archs, "machine": machine}, args.out)
    print((args.out / "smarttrim-speed.md").read_text())


if __name__ == "__main__":
    main()
