#!/usr/bin/env bash
# The run behind docs/pruning.md's table: an ECA-ResNet-20 trained on real CIFAR-10 images (1,000 training and
# 200 validation images per class, drawn from the shared CIFAR-10 training images), pruned 2x in MACs with every
# criterion, right after pruning, after least-squares compensation, and after a 2-epoch fine-tune; then the
# speed of the pruned network.
# Needs the "prune" extra. Usage: bash benchmarks/pruning.sh [WORKDIR]  (default /tmp/ecanet-pruning)
set -euo pipefail
work=${1:-/tmp/ecanet-pruning}
archive=${ECANET_DATA:-../shared/data}/cifar10-train.tar.gz
out=benchmarks/results/pruning
mkdir -p "$out" "$work/cifar10"
[ -d "$work/cifar10/train" ] || tar xzf "$archive" -C "$work/cifar10"
python - "$work" <<'PY'
import sys
from pathlib import Path

work = Path(sys.argv[1])
for cls in sorted((work / "cifar10/train").iterdir()):
    files = sorted(cls.glob("*.jpg"))
    for split, chosen in (("train", files[:1000]), ("val", files[1000:1200])):
        folder = work / "split" / split / cls.name
        folder.mkdir(parents=True, exist_ok=True)
        for f in chosen:
            link = folder / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
PY
common=(--data "$work/split" --image-size 32 --batch-size 128 --workers 2 --seed 0)
{
  python -c "from ecanet.studies.timing import provenance; print('\n'.join(provenance('bash benchmarks/pruning.sh')))"
  [ -f "$work/train/final.safetensors" ] || \
    ecanet train --model eca_resnet20 "${common[@]}" --epochs 15 --output "$work/train" --compare >&2
  ecanet prune --weights "$work/train/final.safetensors" "${common[@]}" --speed-up 2 --compensate \
    --calibration-images 512 --finetune-epochs 2 --lr 0.01 --output "$work/prune" \
    --compare l1 bn taylor random similarity
} | tee "$out/prune.txt"
cp "$work/prune/comparison.json" "$work/prune/comparison.png" "$out/"
# Speed of the pruned network against the trained one (every criterion gives the same widths here: uniform
# scope), in one process with interleaved repeats; run it on a quiet machine.
ecanet bench --models "$work/train/final.safetensors" "$work/prune/eca/pruned.safetensors" --image-size 32 \
  --batch-size 128 --repeats 9 --memory-repeats 2 | tee "$out/bench.txt"
