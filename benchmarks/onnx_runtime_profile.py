"""Where ONNX Runtime spends an exported model's time, by operator type, for a pair of zoo models.

``ecanet bench --models ort:M ort:eca_M`` gives the ratio; this says what it is made of. Both models are
exported with ``ecanet export``'s exporter, loaded with every graph optimisation on (ONNX Runtime's default:
among them the blocked-layout rewrite that absorbs a convolution's BatchNorm, residual addition and ReLU),
run with the profiler on, and the kernel time per run is summed by operator type, with the node counts of
the graph the runtime actually runs (``SessionOptions.optimized_model_filepath``). The profiler's own
overhead makes the totals longer than untimed runs; the ratio of the totals and the extra operator types
are what to read.

    python benchmarks/onnx_runtime_profile.py                      # ResNet-50, batch 1, 224x224
    python benchmarks/onnx_runtime_profile.py --model mobilenet_v2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch

from ecanet.errors import require
from ecanet.export import export_model
from ecanet.models import create_model
from ecanet.timing import provenance


def profile(name: str, batch: int, size: int, runs: int, threads: int, tmp: Path) -> tuple[dict, Counter]:
    """Milliseconds per run by operator type, and the operator types of the optimised graph."""
    ort, onnx = require("onnxruntime", "export"), require("onnx", "export")
    path = tmp / f"{name}.onnx"
    export_model(create_model(name), path, "onnx", image_size=size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.optimized_model_filepath = str(tmp / f"{name}.optimized.onnx")
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / name)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, size, size).numpy()
    for _ in range(3):  # warm-up: profiled too, so the sums are divided by every run
        session.run(None, {"images": x})
    for _ in range(runs):
        session.run(None, {"images": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_type: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_type[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 3)
    graph = onnx.load(options.optimized_model_filepath).graph
    return dict(per_type), Counter(node.op_type for node in graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="the attention-free zoo model; eca_ + it is the other")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(provenance()))
    names = [args.model, f"eca_{args.model}"]
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: profile(n, args.batch_size, args.image_size, args.runs, args.threads, Path(tmp)) for n in names}
    kinds = sorted(set().union(*(r[0] for r in results.values())), key=lambda k: -results[names[1]][0].get(k, 0))
    print(f"batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.threads} threads, {args.runs} runs")
    print(f"{'operator':>16}  " + "  ".join(f"{n + ' ms':>18}  {'nodes':>5}" for n in names) + f"  {'extra ms':>8}")
    for kind in kinds:
        cells = "  ".join(f"{results[n][0].get(kind, 0.0):18.2f}  {results[n][1].get(kind, 0):5d}" for n in names)
        extra = results[names[1]][0].get(kind, 0.0) - results[names[0]][0].get(kind, 0.0)
        print(f"{kind:>16}  {cells}  {extra:+8.2f}")
    totals = [sum(results[n][0].values()) for n in names]
    print(f"{'total':>16}  " + "  ".join(f"{t:18.2f}  {'':5}" for t in totals) + f"  {totals[1] - totals[0]:+8.2f}")
    print(f"profiled time ratio {names[0]} / {names[1]}: {totals[0] / totals[1]:.3f}")


if __name__ == "__main__":
    main()
