#!/usr/bin/env bash
# The CPU tables of docs/benchmarks.md: every zoo family against its attention-free twin, with the A/A
# control row; and the fused block tail against the plain formulation in whole steps (ResNet-50 and
# MobileNetV2 at 224, batch 16; ResNet-20 at 32, batch 64), each model next to its own plain twin. Every
# output begins with its provenance (command, commit, date, CPU, GPU, torch version).
# Usage: bash benchmarks/efficiency.sh [OUTPUT_FOLDER] [extra ecanet bench flags]
set -euo pipefail
out=${1:-benchmarks/results}
shift || true
mkdir -p "$out"
common=(--control --repeats 7 --no-memory "$@")
ecanet bench --suite zoo "${common[@]}" --json "$out/zoo.json" | tee "$out/zoo.txt"
for spec in "resnet50 224 16" "mobilenet_v2 224 16" "resnet20 32 64"; do
  read -r net size batch <<<"$spec"
  ecanet bench --models "$net" "$net:plain" "eca_$net" "eca_$net:plain" --image-size "$size" --batch-size "$batch" \
    "${common[@]}" --json "$out/fused_$net.json" | tee "$out/fused_$net.txt"
done
