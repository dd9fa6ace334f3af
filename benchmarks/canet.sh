#!/usr/bin/env bash
# CA-Net on real photos (docs/segmentation.md, "CA-Net"): the 120 Penn-Fudan street photos with pedestrian
# masks (binary foreground), a fixed split (every fifth photo, sorted by name, validates: 96 train / 24 val).
# U-Net of the same width without attention, CA-Net with its own channel attention, with ECA, and without
# channel attention; 3 seeds each, trained alike (96x96, 25 epochs, batch 8, AdamW lr 1e-3: a budget that fits
# a 2-core CPU in about 40 minutes). `ecanet segment compare` prints mean +- sd Dice and mIoU and the paired
# 95 % interval of each model's Dice against the U-Net's, and writes OUT/comparison.{json,png}.
# Usage: bash benchmarks/canet.sh [PENNFUDAN_TAR] [OUTPUT_FOLDER]
set -euo pipefail
tarball=${1:-../shared/data/pennfudan-seg.tar.gz}
out=${2:-benchmarks/results/canet}
work=$(mktemp -d)
tar xzf "$tarball" -C "$work"
python - "$work" <<'PY'
import os, sys
root = sys.argv[1]
for i, name in enumerate(sorted(os.listdir(f"{root}/pennfudan-seg/images"))):
    split, stem = ("val" if i % 5 == 0 else "train"), name.rsplit(".", 1)[0]
    for kind, ext in (("images", name), ("masks", stem + ".png")):
        os.makedirs(f"{root}/{split}/{kind}", exist_ok=True)
        os.symlink(f"{root}/pennfudan-seg/{kind}/{ext}", f"{root}/{split}/{kind}/{ext}")
PY
mkdir -p "$out"
{
  python -c "import sys; from ecanet.studies.timing import provenance; print('\n'.join(provenance(sys.argv[1])))" "bash benchmarks/canet.sh $*"
  ecanet segment compare --model canet --masks-as foreground \
    --images "$work/train/images" --masks "$work/train/masks" --val-images "$work/val/images" --val-masks "$work/val/masks" \
    --image-size 96 --batch-size 8 --epochs 25 --optimizer adamw --lr 0.001 --weight-decay 0.0001 --workers 2 \
    --output "$work/runs" --seeds 0 1 2 \
    --arm unet channel_attention=none spatial_attention=false scale_attention=false \
    --arm canet --arm canet-eca channel_attention=eca --arm canet-no-ca channel_attention=none
} | tee "$out/comparison.txt"
cp "$work/runs/comparison.json" "$work/runs/comparison.png" "$out/"
