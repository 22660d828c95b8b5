"""Speed of the port: vlprune's converted CLIP ViT-B/16 image tower vs transformers' own ``CLIPVisionModel``.

Both hold the same random weights (an HF-config-built ViT-B/16, converted with ``vlprune.from_hf``), run in one
process on the same input batch, alternating A/B rounds so drift (other jobs, thermals) hits both alike. Reports
images/s (median of the timed iterations), the parity of the [CLS] features, threads and machine, and writes
``docs/results/port.json`` + ``docs/results/port.md``.

    python benchmarks/port_speed.py --batch 32 --warmup 1 --iters 3 --rounds 2 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

import vlprune
from vlprune.eval.bench import measure

VIT_B16 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
           "image_size": 224, "patch_size": 16, "hidden_act": "quick_gelu"}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1}
OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def build(device: torch.device):
    """(vlprune model, transformers CLIPVisionModel) with the same random ViT-B/16 weights."""
    torch.manual_seed(0)
    reference = CLIPModel(CLIPConfig(vision_config=VIT_B16, text_config=TINY_TEXT, projection_dim=512)).eval()
    ours = vlprune.from_hf(reference)
    hf_vision = CLIPVisionModel(reference.config.vision_config).eval()
    hf_vision.load_state_dict(reference.vision_model.state_dict())
    return ours.to(device), hf_vision.to(device)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours, hf_vision = build(device)
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        ours_cls = ours.visual(pixels).x[:, 0]
        hf_cls = hf_vision(pixel_values=pixels).pooler_output
        parity = float((ours_cls - hf_cls).abs().max())
        calls = {"vlprune": partial(ours.encode_image, pixels), "transformers": partial(hf_vision, pixel_values=pixels)}
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                seconds[name].append(measure(fn, args.warmup, args.iters, device)[0])
    speed = {name: args.batch / statistics.median(times) for name, times in seconds.items()}
    return {"batch": args.batch, "device": device.type, "threads": torch.get_num_threads(),
            "images_per_s": speed, "speedup_vs_transformers": speed["vlprune"] / speed["transformers"],
            "seconds_per_batch_each_round": seconds, "max_abs_diff_cls": parity, "warmup": args.warmup,
            "iters": args.iters, "rounds": args.rounds, "note": args.note,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(),
                        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "what": "vlprune encode_image (tower + [CLS] projection) vs transformers CLIPVisionModel forward "
                    "(tower, pooled [CLS]); same random HF-config ViT-B/16 weights, fp32, inference_mode"}


def _caveat(result: dict) -> str:
    if result["rounds"] >= 2:
        return ""
    return (". One round only: the two models ran back to back, not alternated, so a change in background load "
            "between them goes straight into the ratio")


def write(results: list[dict], out: Path) -> None:
    """``port.json`` (all runs) and ``port.md`` (a table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "port.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Speed of the port: converted CLIP ViT-B/16 image tower vs transformers",
             "", "Written by `benchmarks/port_speed.py`. Same random weights in one process, batch of 224 px images, "
             "fp32; images/s is the median over timed iterations, A/B rounds alternating.", "",
             "| device | threads | batch | vlprune img/s | transformers img/s | ratio | max abs diff ([CLS]) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['device']} {r['machine']['gpu'] or r['machine']['processor']} | {r['threads']} | "
                     f"{r['batch']} | {r['images_per_s']['vlprune']:.2f} | {r['images_per_s']['transformers']:.2f} | "
                     f"{r['speedup_vs_transformers']:.3f}x | {r['max_abs_diff_cls']:.1e} |")
    lines += ["", *[f"- {r['device']}: {r['note']} ({r['date']}, torch {r['versions']['torch']}, transformers "
                    f"{r['versions']['transformers']}, {r['warmup']} warm-up + {r['iters']} timed iterations x "
                    f"{r['rounds']} rounds){_caveat(r)}" for r in results], ""]
    (out / "port.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--note", default="", help="conditions of the run, written beside the numbers")
    parser.add_argument("--append", action="store_true", help="add to the existing port.json (e.g. a GPU run)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--write-only", action="store_true", help="rewrite port.md from port.json, measure nothing")
    args = parser.parse_args()
    if args.write_only:
        write(json.loads((args.out / "port.json").read_text()), args.out)
        return
    result = run(args)
    previous = json.loads((args.out / "port.json").read_text()) if args.append and (args.out / "port.json").is_file() \
        else []
    write(previous + [result], args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
