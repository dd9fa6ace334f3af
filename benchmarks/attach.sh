#!/usr/bin/env bash
# ECA in models users already have (docs/weights.md, "What swapping and attaching cost"): each torchvision
# network next to its SE-swapped (+replace_se) or ECA-attached (+attach_eca) version, with the A/A control row;
# parameters, MACs, inference and training img/s in whole steps (224, batch 8, 7 interleaved repeats). Every
# output begins with its provenance (command, commit, date, CPU, GPU, torch version).
# Usage: bash benchmarks/attach.sh [OUTPUT_FOLDER] [extra ecanet bench flags]
set -euo pipefail
out=${1:-benchmarks/results/attach}
shift || true
mkdir -p "$out"
common=(--control --repeats 7 --no-memory --image-size 224 --batch-size 8 "$@")
for spec in efficientnet_b0:replace_se mobilenet_v3_large:replace_se regnet_y_400mf:replace_se \
  resnet50:attach_eca regnet_x_400mf:attach_eca convnext_tiny:attach_eca; do
  net=${spec%%:*} how=${spec##*:}
  ecanet bench --models "tv:$net" "tv:$net+$how" "${common[@]}" --json "$out/$net.json" | tee "$out/$net.txt"
done
