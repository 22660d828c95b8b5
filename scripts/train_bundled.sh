#!/usr/bin/env bash
# Trains the two bundled models (toy-clip, toy-fusion) from a fixed seed on CPU and copies them into
# src/vlprune/assets/. Every stage is resumable: re-run the script after an interruption to continue; a stage whose
# model/ is there is skipped (so stages trained elsewhere, e.g. by scripts/train_bundled_gpu.sh, are kept).
# About 80 minutes on 2 CPU cores (about 1 s per toy-clip step, 1.5 s per toy-fusion step); a GPU makes it minutes.
# These are exactly the commands that produced the shipped models. The toy ViT starts its position embeddings from
# the 2-D sin-cos table (registry.py `_toy_vision`); docs/training.md ("Position") says why. The learning rates are
# at most 3e-4 until the VQA fine-tune: at 1e-3 the towers learn which colour a word belongs to much later or not
# at all (docs/results/text-binding.md, docs/training.md "Learning rate").
set -euo pipefail
cd "$(dirname "$0")/.."
VLP=${VLPRUNE:-.venv/bin/vlprune}
RUNS=${RUNS:-runs/bundled}
# WORKERS: DataLoader processes that render the toy world ahead of the training step (the weights do not depend on
# it). On 2 CPU cores leave it at 0; on a GPU machine the rendering is the bottleneck without them, so give it most of
# the cores: scripts/train_bundled_gpu.sh.
W="--workers ${WORKERS:-0}"
# SCENE_LOSS: how the scene probes' losses are averaged (vlprune.train.scene.SCENE_LOSSES); the shipped models used mean.
S="--scene-loss ${SCENE_LOSS:-mean}"
trained() { [ -f "$RUNS/$1/model/model.safetensors" ]; }

# 1a. toy-clip from scratch: ITC + scene supervision (per-cell attribute and position probes, colour-bound
#     probes; vlprune.train.scene), one hard-negative twin beside each scene (32 scenes x 2 = 64 pairs per batch).
trained toy-clip-v10 || $VLP train $W $S --model toy-clip --out "$RUNS/toy-clip-v10" --tasks itc,scene --batch-size 32 --twins 1 --lr 3e-4 \
    --warmup-steps 200 --seed 0 --ckpt-every 100 --log-every 20 --steps "${CLIP_STEPS:-2000}"

# 1b. toy-clip continued with families of 4 (16 scenes x 4 variants: harder negatives in every batch).
trained toy-clip-v11 || $VLP train $W $S --model toy-clip --out "$RUNS/toy-clip-v11" --tasks itc,scene --batch-size 16 --twins 3 --lr 1.5e-4 \
    --warmup-steps 50 --seed 0 --ckpt-every 100 --log-every 20 --steps "${TWIN_STEPS:-1000}" \
    --init-from "$RUNS/toy-clip-v10/model"

# 2. toy-fusion pre-training (ITC + ITM with hard negatives + MLM + scene supervision); the image tower starts
#    from toy-clip's, as ALBEF starts from a pretrained ViT.
trained toy-fusion-pretrain-v4 || $VLP train $W $S --model toy-fusion --out "$RUNS/toy-fusion-pretrain-v4" --tasks itc,itm,mlm,scene \
    --steps "${FUSION_STEPS:-400}" --batch-size 64 --lr 3e-4 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-clip-v11/model" --init-parts visual,visual_proj

# 3. toy-fusion VQA fine-tuning, keeping ITC, ITM and the scene probes on so one checkpoint serves retrieval
#    and VQA. Grounded: the fusion layers' [CLS] cross-attention is told which cell each question is about
#    (ground) and a read-out of the fused [CLS] what object is there (ground_object); without them the position
#    questions stayed near chance (docs/results/grounding.md, docs/training.md "Grounded VQA").
trained toy-fusion-vqa-v5 || $VLP train $W $S --model toy-fusion --out "$RUNS/toy-fusion-vqa-v5" \
    --tasks vqa,ground,ground_object,itc:0.5,itm:0.5,scene:0.5 \
    --steps "${VQA_STEPS:-800}" --batch-size 64 --lr 5e-4 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-fusion-pretrain-v4/model"

# BASE_ONLY=1 stops here: the two bundled models' stages, without the demo's derived checkpoints or the copy.
[ "${BASE_ONLY:-0}" = 1 ] && exit 0

# 4. The demo's SmartTrim row: toy-fusion fine-tuned on VQA with SmartTrim (keep targets: image tokens 0.5, text
#    tokens 0.7, heads 0.8; the trimmers learn at 100x the model's learning rate, as in scripts/results_smarttrim.py).
trained toy-fusion-smarttrim || $VLP train $W --model "$RUNS/toy-fusion-vqa-v5/model" --out "$RUNS/toy-fusion-smarttrim" --method smarttrim --tasks vqa \
    --target-vision 0.5 --target-text 0.7 --target-heads 0.8 --set trimmer_lr_scale=100 \
    --steps "${TRIM_STEPS:-100}" --batch-size 16 --lr 1e-4 --warmup-steps 10 --seed 0 --ckpt-every 50 --log-every 10

# 5. The demo's MoPE-CLIP row: toy-clip's image tower pruned to half its parameters (width, distil, depth, distil).
[ -f "$RUNS/toy-clip-mope/prune.json" ] || $VLP prune --model "$RUNS/toy-clip-v11/model" --out "$RUNS/toy-clip-mope" \
    --method mope --stage finetune --tower vision --target-params 0.5 --distill-steps "${MOPE_DISTIL:-100}" --lr 1e-3

A=src/vlprune/assets
mkdir -p $A/toy-clip $A/toy-fusion $A/toy-fusion-smarttrim $A/toy-clip-mope/cost_tables
cp "$RUNS/toy-clip-v11/model/"{config.json,model.safetensors,tokenizer.json} $A/toy-clip/
cp "$RUNS/toy-fusion-vqa-v5/model/"{config.json,model.safetensors,tokenizer.json} $A/toy-fusion/
cp "$RUNS/toy-fusion-smarttrim/model/"* $A/toy-fusion-smarttrim/
cp "$RUNS/toy-clip-mope/model/"{config.json,model.safetensors,tokenizer.json} $A/toy-clip-mope/
cp "$RUNS/toy-clip-mope/cost_tables/"*.json $A/toy-clip-mope/cost_tables/
echo "bundled models written to $A/"
