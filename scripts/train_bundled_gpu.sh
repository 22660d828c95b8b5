#!/usr/bin/env bash
# The bundled models' stages (scripts/train_bundled.sh, stages 1-3) on a lent GPU, sized to one device check.
#
# Unlike train_bundled.sh's default it uses the balanced scene loss (SCENE_LOSS). A 40-step probe measures the
# toy-clip step time on the machine; each stage then gets its share of BUDGET_S seconds (stage time ratios as
# measured on CPU, docs/results.md "Training runs"). The chosen step counts and loss go to $OUT/steps.env:
# `set -a; . steps.env; scripts/train_bundled.sh` re-runs exactly these commands anywhere.
# Written for the device machine (python3 there has CUDA torch; 16 cores, so 14 render workers):
#
#   OUT=... scripts/train_bundled_gpu.sh      # then, here: unpack $OUT/*.tar.gz into runs/bundled and run
#                                             # `set -a; . steps.env; scripts/train_bundled.sh` (skips stages 1-3)
#
# $OUT gets one tar.gz per stage model (config, weights, tokenizer), the stages' metrics.jsonl, steps.env and the
# two floor evaluations (toy-clip retrieval, toy-fusion VQA on 1,000 val pairs) as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 VLPRUNE=${VLPRUNE:-"python3 -m vlprune.cli"} WORKERS=${WORKERS:-14}
export RUNS=${RUNS:-/tmp/bundled} BASE_ONLY=1
OUT=${OUT:?set OUT to the directory that receives the results}
BUDGET_S=${BUDGET_S:-400}
# the balanced scene loss: from scratch it teaches the tokens small objects' shape that the shipped (mean) models
# barely read (docs/results/scene-loss.md, docs/results.md "What limits retrieval")
export SCENE_LOSS=${SCENE_LOSS:-balanced}

# probe: the step time of stage 1a's batch (a throw-away run; its first 10 steps, the warm-up of kernels, not used)
$VLPRUNE train --workers "$WORKERS" --model toy-clip --out "$RUNS/probe" --tasks itc,scene --batch-size 32 --twins 1 \
    --steps 40 --warmup-steps 10 --log-every 10 --ckpt-every 40
python3 - "$RUNS/probe/metrics.jsonl" "$BUDGET_S" >"$OUT/steps.env" <<'EOF'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
sec = sorted(r["sec_per_step"] for r in rows[1:])[len(rows[1:]) // 2]
budget = float(sys.argv[2])
# stage: (share of the budget, step time relative to stage 1a (CPU medians 0.96 / 1.10 / 1.67 / 1.66 s), its warm-up
# steps in train_bundled.sh: the fewest it can run)
stages = {"CLIP_STEPS": (0.40, 1.0, 200), "TWIN_STEPS": (0.20, 1.15, 50), "FUSION_STEPS": (0.20, 1.75, 50),
          "VQA_STEPS": (0.20, 1.75, 50)}
print(f"# probe: {sec:.4f} s per toy-clip step; budget {budget:.0f} s")
print(f"SCENE_LOSS={os.environ['SCENE_LOSS']}")
for name, (share, factor, fewest) in stages.items():
    print(f"{name}={max(fewest, int(share * budget / (sec * factor)) // 50 * 50)}")
EOF
cat "$OUT/steps.env"
set -a; . "$OUT/steps.env"; set +a
scripts/train_bundled.sh

$VLPRUNE eval --model "$RUNS/toy-clip-v11/model" --task retrieval --data toyworld:val --out "$OUT/toy-clip-retrieval.json"
$VLPRUNE eval --model "$RUNS/toy-fusion-vqa-v5/model" --task vqa --data toyworld:val --out "$OUT/toy-fusion-vqa.json"
for stage in toy-clip-v10 toy-clip-v11 toy-fusion-pretrain-v4 toy-fusion-vqa-v5; do
    tar -czf "$OUT/$stage.tar.gz" -C "$RUNS" "$stage/model"
done
tar -czf "$OUT/metrics.tar.gz" -C "$RUNS" $(cd "$RUNS" && ls -d */metrics.jsonl)
