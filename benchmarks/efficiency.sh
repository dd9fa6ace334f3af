#!/usr/bin/env bash
# The runs behind the efficiency tables (README.md, docs/benchmarks.md): ResNet-50 with no attention, SE, CBAM
# and ECA (fast path), plus the plain ECA formulation and timm's ECA, repeats interleaved. Every output begins
# with its provenance (command, commit, date, CPU, GPU, torch version).
# Usage: bash benchmarks/efficiency.sh [extra ecanet bench flags, e.g. --device cuda]
set -euo pipefail
out=benchmarks/results
mkdir -p "$out"
ecanet bench --include-reference --repeats 9 --memory-repeats 3 --json "$out/eager.json" --plot "$out/eager.png" "$@" | tee "$out/eager.txt"
ecanet bench --include-reference --compile --channels-last --repeats 7 --memory-repeats 3 --json "$out/compiled.json" \
  --plot "$out/compiled.png" "$@" | tee "$out/compiled.txt"
ecanet bench --include-reference --inference-only --repeats 9 --json "$out/inference_only.json" "$@" \
  | tee "$out/inference_only.txt"
ecanet bench --models resnet50 eca_resnet50 --compile --channels-last --repeats 30 --no-memory "$@" \
  | tee "$out/compiled_pair.txt"
python benchmarks/compiled_block.py --repeats 30 --kernels | tee "$out/compiled_block.txt"
python benchmarks/block_tail.py --repeats 21 | tee "$out/block_tail.txt"
ecanet bench --models mobilenet_v2 se_mobilenet_v2 eca_mobilenet_v2 eca_mobilenet_v2:plain --repeats 7 \
  --json "$out/mobilenet_v2.json" "$@" | tee "$out/mobilenet_v2.txt"
