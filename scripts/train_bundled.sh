#!/usr/bin/env bash
# Trains the two bundled models (toy-clip, toy-fusion) from a fixed seed on CPU and copies them into
# src/vlprune/assets/. Every stage is resumable: re-run the script after an interruption to continue.
# ~1.5 hours on 2 CPU cores (about 1 s per toy-clip step, 1.5 s per toy-fusion step); a GPU makes it minutes.
#
# These are the commands that produced the shipped models, in order. Stage 1a was launched for 2,500 steps,
# extended to a 4,000-step schedule at step 1,200 and stopped at step 2,800 when the colour-bound scene probes
# of stage 1b were ready; `--until` replays that schedule (same checkpoints, same learning-rate curve). One
# difference from the shipped run: stage 1a ran with the first version of the scene probes (commit 351da96, a
# per-cell read-out of the embeddings, which collapsed to "empty" and was replaced); today's code trains the
# colour-bound probes from the start, so a re-run gives a similar, not bit-identical, toy-clip. Likewise stages
# 1b, 2 and 3 ran before the cell probe learned to predict each cell's row and column (commit e213442);
# today's code adds that term (`scene_where`).
set -euo pipefail
cd "$(dirname "$0")/.."
VLP=${VLPRUNE:-.venv/bin/vlprune}
RUNS=${RUNS:-runs/bundled}

# 1a. toy-clip from scratch: ITC + scene supervision (per-cell attribute probes; vlprune.train.scene), one
#     hard-negative twin beside each scene (32 scenes x 2 = 64 pairs per batch).
CLIP_A=(--model toy-clip --out "$RUNS/toy-clip-v5" --tasks itc,scene --batch-size 32 --twins 1 --lr 1e-3
        --warmup-steps 200 --seed 0 --ckpt-every 100 --log-every 20)
$VLP train "${CLIP_A[@]}" --steps 2500 --until 1200
$VLP train "${CLIP_A[@]}" --steps 4000 --until 2800

# 1b. toy-clip continued with families of 4 (16 scenes x 4 variants) and the colour-bound probes.
$VLP train --model toy-clip --out "$RUNS/toy-clip-v6" --tasks itc,scene --batch-size 16 --twins 3 --lr 5e-4 \
    --warmup-steps 50 --seed 0 --ckpt-every 100 --log-every 20 --steps "${CLIP_STEPS:-1500}" \
    --init-from "$RUNS/toy-clip-v5/model"

# 2. toy-fusion pre-training (ITC + ITM with hard negatives + MLM + scene supervision); the image tower starts
#    from toy-clip's, as ALBEF starts from a pretrained ViT.
$VLP train --model toy-fusion --out "$RUNS/toy-fusion-pretrain-v2" --tasks itc,itm,mlm,scene \
    --steps "${FUSION_STEPS:-400}" --batch-size 64 --lr 1e-3 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-clip-v6/model" --init-parts visual,visual_proj

# 3. toy-fusion VQA fine-tuning, keeping ITC, ITM and the scene probes on so one checkpoint serves retrieval
#    and VQA. Launched for 600 steps and stopped at step 300 (VQA accuracy had plateaued; see docs/training.md).
$VLP train --model toy-fusion --out "$RUNS/toy-fusion-vqa-v2" --tasks vqa,itc:0.5,itm:0.5,scene:0.5 \
    --steps 600 --until "${VQA_UNTIL:-300}" --batch-size 64 --lr 5e-4 --warmup-steps 50 --seed 0 --ckpt-every 100 \
    --log-every 20 --init-from "$RUNS/toy-fusion-pretrain-v2/model"

mkdir -p src/vlprune/assets/toy-clip src/vlprune/assets/toy-fusion
cp "$RUNS/toy-clip-v6/model/"{config.json,model.safetensors,tokenizer.json} src/vlprune/assets/toy-clip/
cp "$RUNS/toy-fusion-vqa-v2/model/"{config.json,model.safetensors,tokenizer.json} src/vlprune/assets/toy-fusion/
echo "bundled models written to src/vlprune/assets/"
