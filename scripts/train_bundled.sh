#!/usr/bin/env bash
# Trains the two bundled models (toy-clip, toy-fusion) from a fixed seed on CPU and copies them into
# src/vlprune/assets/. Every stage is resumable: re-run the script after an interruption to continue.
# ~2 hours on 2 CPU cores; a GPU makes it minutes (the same commands run there).
set -euo pipefail
cd "$(dirname "$0")/.."
VLP=${VLPRUNE:-.venv/bin/vlprune}
RUNS=${RUNS:-runs/bundled}

# 1. toy-clip: 12-layer ViT + 4-layer causal text encoder, ITC from scratch.
$VLP train --model toy-clip --out "$RUNS/toy-clip" --tasks itc --steps "${CLIP_STEPS:-4000}" --batch-size 64 \
    --lr 2e-3 --warmup-steps 100 --seed 0 --ckpt-every 100 --log-every 20

# 2. toy-fusion pre-training (ITC + ITM with hard negatives + MLM); the image tower starts from toy-clip's,
#    as ALBEF starts from a pretrained ViT.
$VLP train --model toy-fusion --out "$RUNS/toy-fusion-pretrain" --tasks itc,itm,mlm \
    --steps "${FUSION_STEPS:-400}" --batch-size 64 --lr 1e-3 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-clip/model" --init-parts visual,visual_proj

# 3. toy-fusion VQA fine-tuning, keeping ITC and ITM on so one checkpoint serves retrieval and VQA.
$VLP train --model toy-fusion --out "$RUNS/toy-fusion-vqa" --tasks vqa,itc:0.5,itm:0.5 \
    --steps "${VQA_STEPS:-600}" --batch-size 64 --lr 1e-3 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-fusion-pretrain/model"

mkdir -p src/vlprune/assets/toy-clip src/vlprune/assets/toy-fusion
cp "$RUNS/toy-clip/model/"{config.json,model.safetensors,tokenizer.json} src/vlprune/assets/toy-clip/
cp "$RUNS/toy-fusion-vqa/model/"{config.json,model.safetensors,tokenizer.json} src/vlprune/assets/toy-fusion/
echo "bundled models written to src/vlprune/assets/"
