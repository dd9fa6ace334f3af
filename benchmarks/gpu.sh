#!/usr/bin/env bash
# The GPU check, at most 8 minutes on one GPU: install the project, run the GPU test tier (pytest -m cuda),
# then time ResNet-50 without attention, with SE and with ECA (and timm's ECA where installed) with
# `ecanet bench --device cuda`: bf16 autocast, channels_last, eager and compiled, batch 64 training and batch
# 1 inference, each with its A/A control row. Every result file begins with its provenance (command, commit,
# date, CPU, GPU, torch version); they go to benchmarks/results/gpu/ (or $1), and docs/training.md cites them.
# Usage: bash benchmarks/gpu.sh [OUTPUT_FOLDER]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
python -c "import ecanet" 2>/dev/null || python -m pip install -q -e ".[test]" || python -m pip install -q --no-deps -e .
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'" || exit 1
status=0
timeout 270 python -m pytest -m cuda -q -p no:cacheprovider --no-cov -x 2>&1 | tee "$out/tier.txt" || status=1
models=(resnet50 se_resnet50 eca_resnet50)
python -c "import timm" 2>/dev/null && models+=(timm:eca_resnet50)
common=(--device cuda --dtype bfloat16 --channels-last --control --no-memory --repeats 5 --warmup 3 --models "${models[@]}")
timeout 60 ecanet bench "${common[@]}" --batch-size 64 --json "$out/train_b64_eager.json" | tee "$out/train_b64_eager.txt" || status=1
timeout 120 ecanet bench "${common[@]}" --batch-size 64 --compile --json "$out/train_b64_compiled.json" \
  | tee "$out/train_b64_compiled.txt" || status=1
timeout 45 ecanet bench "${common[@]}" --batch-size 1 --inference-only --json "$out/infer_b1_eager.json" \
  | tee "$out/infer_b1_eager.txt" || status=1
exit $status
