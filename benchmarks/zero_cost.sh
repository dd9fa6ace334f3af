#!/usr/bin/env bash
# The runs behind docs/benchmarks.md "ECA against its attention-free twin" to "The floor at the cross-channel
# barrier" (every ecanet bench run of the zoo with its control row):
# every zoo family at its own size (eager; compiled with channels_last; bf16 autocast), the whole-step floor
# (network_floor.py), batch-1 latency of
# ResNet-50 and MobileNetV2 (eager, compiled, ONNX Runtime), the batch-size and image-size sweeps, Faster
# R-CNN's training step, the block tails of every family, fp32 and bf16 (and with frozen BatchNorm at the
# detector's sizes), one gate call of ECA's and SE's at every zoo stage's shape, ONNX Runtime's time by
# operator type and the compiled bottlenecks kernel by kernel.
# Each output begins with its provenance.
# Usage: bash benchmarks/zero_cost.sh [OUT_DIR]  (about four hours on 2 CPU cores)
set -euo pipefail
out=${1:-benchmarks/results/zero_cost}
mkdir -p "$out" "$out/gate_call"
run() {  # run NAME COMMAND...: the table to NAME.txt, the progress log to NAME.log
  local name=$1
  shift
  "$@" 2>"$out/$name.log" | tee "$out/$name.txt" || echo "$name failed: see $out/$name.log" >&2
}
run zoo_eager ecanet bench --suite zoo --control --repeats 21 --memory-repeats 2 --json "$out/zoo_eager.json" \
  --plot "$out/zoo_eager.png"
run zoo_cifar ecanet bench --suite zoo --families resnet20 resnet56 --control --repeats 61 --no-memory \
  --json "$out/zoo_cifar.json"
run zoo_bf16_mobilenet_v2 ecanet bench --models mobilenet_v2 eca_mobilenet_v2 --dtype bfloat16 --control \
  --repeats 21 --no-memory --json "$out/zoo_bf16_mobilenet_v2.json"
for m in resnet20 resnet56; do
  run "network_floor_$m" python benchmarks/network_floor.py --model "$m" --repeats 31
done
for m in resnet18 resnet50; do
  run "network_floor_$m" python benchmarks/network_floor.py --model "$m" --repeats 21
done
for m in resnet50 mobilenet_v2; do
  run "latency_${m}" ecanet bench --models "$m" "eca_$m" --batch-size 1 --inference-only --repeats 15 \
    --json "$out/latency_${m}.json"
  run "latency_${m}_ort" ecanet bench --models "ort:$m" "ort:eca_$m" --batch-size 1 --inference-only \
    --repeats 15 --json "$out/latency_${m}_ort.json"
  run "latency_${m}_compiled" ecanet bench --models "$m" "eca_$m" --batch-size 1 --inference-only --compile \
    --channels-last --repeats 15 --json "$out/latency_${m}_compiled.json"
done
run gate_call/zoo python benchmarks/gate_call.py
run gate_call/zoo_batch1 python benchmarks/gate_call.py --models resnet50 mobilenet_v2 --batch-size 1 \
  --phases inference
run detection python benchmarks/detection.py --kinds faster_rcnn --size 320 320 --train --repeats 9
run block_tail_resnet56 python benchmarks/block_tail.py --model resnet56 --batch-size 64 --repeats 21
run zoo_compiled ecanet bench --suite zoo --compile --channels-last --repeats 5 --no-memory \
  --json "$out/zoo_compiled.json" --plot "$out/zoo_compiled.png"
run sweep_batch ecanet bench --models resnet50 eca_resnet50 --batch-sizes 1 8 32 --repeats 5 --no-memory \
  --json "$out/sweep_batch.json" --plot "$out/sweep_batch.png"
run sweep_size ecanet bench --models resnet50 eca_resnet50 --image-sizes 32 64 128 224 320 --repeats 5 \
  --no-memory --json "$out/sweep_size.json" --plot "$out/sweep_size.png"
run zoo_bf16 ecanet bench --suite zoo --families resnet50 resnet20 mobilenet_v2 --dtype bfloat16 --repeats 7 \
  --json "$out/zoo_bf16.json" --plot "$out/zoo_bf16.png"
run block_tail_resnet50 python benchmarks/block_tail.py --repeats 21
run block_tail_resnet50_batch1 python benchmarks/block_tail.py --batch-size 1 --inference-only --repeats 21 \
  --step-repeats 15
run block_tail_mobilenet_v2 python benchmarks/block_tail.py --model mobilenet_v2 --repeats 21
run block_tail_mobilenet_v2_batch1 python benchmarks/block_tail.py --model mobilenet_v2 --batch-size 1 --inference-only \
  --repeats 21 --step-repeats 15
run block_tail_mobilenet_v2_bf16 python benchmarks/block_tail.py --model mobilenet_v2 --dtype bfloat16 --repeats 21
run block_tail_resnet20_bf16 python benchmarks/block_tail.py --model resnet20 --batch-size 64 --dtype bfloat16 \
  --repeats 21
for m in resnet50 mobilenet_v2; do
  run "onnx_runtime_profile_${m}" python benchmarks/onnx_runtime_profile.py --model "$m"
done
run block_tail_resnet18 python benchmarks/block_tail.py --model resnet18 --repeats 21
run block_tail_resnet101 python benchmarks/block_tail.py --model resnet101 --repeats 21
run compiled_block python benchmarks/compiled_block.py --repeats 30
run compiled_block_kernels python benchmarks/compiled_block.py --repeats 30 --kernels
run compiled_block_batch1 python benchmarks/compiled_block.py --batch-size 1 --repeats 30
run compiled_block_batch1_kernels python benchmarks/compiled_block.py --batch-size 1 --repeats 30 --kernels
run block_tail_resnet20 python benchmarks/block_tail.py --model resnet20 --batch-size 64 --repeats 21
run block_tail_detection python benchmarks/block_tail.py --frozen-bn --batch-size 1 --image-size 320 --repeats 21
