"""Where ONNX Runtime spends an offline encoder call, and the speed-up a method could reach at best.

Issue 15 asks a materialised encoder to run offline at ≥ 0.9× its MAC reduction. MACs count only
the products (linear maps, convolutions, attention's two products); the per-element work between
them (bias and residual adds, activations, layer norms, softmax, transposes, splits, concatenations)
is not counted. This script profiles the offline call (``--batch`` utterances of ``--seconds`` s,
the inputs of ``pruned_speed.py``) of the dense encoder and of L0 and LRF at ``--sparsities`` with
ONNX Runtime's profiler (``--threads``, 2 as in ``pruned_speed.py``; one node runs at a time, so
the kernel times add up to the call): ``--calls`` rounds after a warm-up, each calling every model
once (alternating order, so a busy moment hits all of them; per operator the median over rounds).
It splits each call's kernel time into

* **products**: ``MatMul``, ``FusedMatMul``, ``Gemm`` and ``Conv`` kernels (``PRODUCT_OPS``);
* **per-element**: every other kernel.

**The ceiling.** If every product of a compressed encoder ran at the dense encoder's time per MAC,
its call would take  t* = products_dense × MACs / MACs_dense + per-element  (its own per-element
time). Its best speed-up is then t_dense / t*, and ``ceiling`` is that divided by the MAC reduction:
the largest speed-up ÷ MAC reduction its per-element work allows. ``measured`` is the ratio of the
profiled calls themselves (``pruned_speed.py`` measures speed, with per-round ratios).
The load average is recorded; above ``pruned_speed.MAX_LOAD`` the script refuses to run.

    python benchmarks/onnx_op_profile.py    # writes benchmarks/results/onnx_op_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from pruned_speed import (
    MAX_LOAD,
    SparsitySelector,
    dense_encoder,
    lrf_encoder,
    onnx_session,
    structured_scores,
    workload_inputs,
)

from kdlab.compress.param_count import expected_macs_per_second
from kdlab.deploy.onnx_export import export_encoder

RESULT = Path(__file__).resolve().parent / "results" / "onnx_op_profile.json"
PRODUCT_OPS = frozenset({"MatMul", "FusedMatMul", "Gemm", "Conv"})


def kernel_ms_by_op(session: ort.InferenceSession) -> dict[str, float]:
    """Median over the session's calls but its first (a warm-up) of each ONNX operator type's
    kernel milliseconds in a call; ends the session's profile."""
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    per_call = [collections.Counter() for _ in runs]
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        call = next((i for i, (first, last) in enumerate(runs) if first <= event["ts"] <= last), None)
        if call is not None:
            per_call[call][event["args"]["op_name"]] += event["dur"] / 1e3
    ops = set().union(*per_call)
    medians = {op: statistics.median(c[op] for c in per_call) for op in ops}
    return dict(sorted(medians.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="teacher_config preset, or study (default: default)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7, help="profiled rounds (default: 7)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    if load_before[0] > MAX_LOAD:
        sys.exit(f"refusing to measure: the 1-minute load average is {load_before[0]:.2f} > {MAX_LOAD}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dense = dense_encoder(args.size)
    selector = SparsitySelector(dense, structured_scores(dense))
    models = [("dense", dense)]
    for sparsity in args.sparsities:
        models.append((f"l0-{sparsity}", selector.materialise(sparsity)[0].eval()))
        models.append((f"lrf-{sparsity}", lrf_encoder(dense, sparsity)))
    inputs = workload_inputs(dense.config.input_dim, args.batch, args.seconds, dense.config.subsampling_factor)
    feed = {"features": inputs["features"].numpy(), "lengths": inputs["lengths"].numpy()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for name, encoder in models:
            export_encoder(encoder, Path(tmp) / f"{name}.onnx")
            sessions.append(onnx_session(Path(tmp) / f"{name}.onnx", args.threads, profile=True))
        for r in range(args.calls + 1):  # one call of each model per round, so a busy moment hits all
            for session in sessions if r % 2 == 0 else reversed(sessions):
                session.run(None, feed)
        for (name, encoder), session in zip(models, sessions):
            by_op = kernel_ms_by_op(session)
            products = sum(ms for op, ms in by_op.items() if op in PRODUCT_OPS)
            rows.append(
                {
                    "name": name,
                    "macs_per_second": float(expected_macs_per_second(encoder, deterministic=True)),
                    "call_ms": sum(by_op.values()),
                    "products_ms": products,
                    "per_element_ms": sum(by_op.values()) - products,
                    "by_op_ms": by_op,
                }
            )
    base = rows[0]
    for row in rows:
        reduction = base["macs_per_second"] / row["macs_per_second"]
        best_ms = base["products_ms"] / reduction + row["per_element_ms"]
        row["mac_reduction"] = reduction
        row["measured"] = base["call_ms"] / row["call_ms"] / reduction
        row["ceiling"] = base["call_ms"] / best_ms / reduction
        print(
            f"{row['name']:9s} call {row['call_ms']:7.1f} ms: products {row['products_ms']:6.1f}, per-element "
            f"{row['per_element_ms']:5.1f} ({100 * row['per_element_ms'] / row['call_ms']:4.1f} %)  MACs /"
            f"{reduction:4.2f}  speed-up ÷ MACs: measured {row['measured']:4.2f}, ceiling {row['ceiling']:4.2f}"
        )
    result = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "size": args.size,
        "threads": args.threads,
        "batch": args.batch,
        "seconds": args.seconds,
        "calls": args.calls,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - start,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
