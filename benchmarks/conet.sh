#!/usr/bin/env bash
# CONet on real images (docs/conet.md): the search on ResNet-20, then the found network against the baseline.
# Data: 600 CIFAR-10 training images per class (the first 600 of each class folder, sorted by name), 1/6 held
# out per class for validation (--val-split, split seed 0): 5,000 train / 1,000 val, 32x32. Budget that fits a
# 2-core CPU: the search runs 3 trials of 3 epochs (γ 0.2, δ 0); the comparison trains both networks for 6
# epochs with 3 seeds each (same split, same settings). Prints and writes OUT/search.json, OUT/search.png,
# OUT/widths.json, OUT/comparison.{txt,json,png}.
# Usage: bash benchmarks/conet.sh [CIFAR10_TAR] [OUTPUT_FOLDER]
set -euo pipefail
tarball=${1:-../shared/data/cifar10-train.tar.gz}
out=${2:-benchmarks/results/conet}
work=$(mktemp -d)
tar xzf "$tarball" -C "$work"
python - "$work" <<'PY'
import os, sys
root = sys.argv[1]
for cls in sorted(os.listdir(f"{root}/train")):
    os.makedirs(f"{root}/subset/{cls}")
    for name in sorted(os.listdir(f"{root}/train/{cls}"))[:600]:
        os.symlink(f"{root}/train/{cls}/{name}", f"{root}/subset/{cls}/{name}")
PY
mkdir -p "$out"
common=(--train-dir "$work/subset" --in-memory --val-split 0.1667 --image-size 32 --batch-size 128 --lr 0.1 --workers 2)
provenance() { python -c "import sys; from ecanet.studies.timing import provenance; print('\n'.join(provenance(sys.argv[1])))" "bash benchmarks/conet.sh $*"; }
{
  provenance "$@"
  ecanet search-widths --model resnet20 "${common[@]}" --trials 3 --epochs-per-trial 3 --scale-step 0.2 --threshold 0 \
    --output "$work/search"
} | tee "$out/search.txt"
cp "$work/search/search.json" "$work/search/search.png" "$work/search/widths.json" "$out/"
{
  provenance "$@"
  ecanet compare --models resnet20 "resnet20@$out/widths.json" "${common[@]}" --epochs 6 --seeds 3 --output "$work/compare"
} | tee "$out/comparison.txt"
cp "$work/compare/comparison.json" "$work/compare/comparison.png" "$out/"
