#!/usr/bin/env bash
# The evidence for "does ECA help?": ResNet-20 without attention and with SE, ECA, CECA, ECA-NS and CBAM,
# trained alike on the shared CIFAR-10 training images (10 % held out, stratified, for validation), 3 seeds
# each, with `ecanet compare` (resumable: run it again after an interruption and it continues).
# For CIFAR ResNet-20 the adaptive k (Eq. 9) is 3 in every stage (16, 32, 64 channels), so eca_resnet20 is
# both "adaptive" and "k=3".
# Usage: bash benchmarks/accuracy.sh [WORKDIR] [EPOCHS]  (defaults /tmp/ecanet-accuracy, 2)
set -euo pipefail
work=${1:-/tmp/ecanet-accuracy}
epochs=${2:-2}
archive=${ECANET_DATA:-../shared/data}/cifar10-train.tar.gz
out=benchmarks/results/accuracy
mkdir -p "$out" "$work/cifar10"
[ -d "$work/cifar10/train" ] || tar xzf "$archive" -C "$work/cifar10"
{
  python -c "from ecanet.studies.timing import provenance; print('\n'.join(provenance('bash benchmarks/accuracy.sh $work $epochs')))"
  ecanet compare --models resnet20 se_resnet20 eca_resnet20 ceca_resnet20 eca_ns_resnet20 cbam_resnet20 \
    --seeds 3 --data "$work/cifar10" --val-split 0.1 --in-memory --image-size 32 --batch-size 128 \
    --workers 0 --epochs "$epochs" --output "$work/compare"
} | tee "$out/compare.txt"
cp "$work/compare/comparison.json" "$work/compare/comparison.png" "$out/"
