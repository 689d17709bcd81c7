"""Would ``torch.compile`` (inductor, CPU) be a faster runtime than ONNX Runtime for materialised encoders?

Issue 15 asks the LRF encoder to reach 0.9x of its MAC reduction offline. ONNX Runtime gets 0.78x
(``pruned_speed.json``): it cannot shrink the per-element work that LRF leaves at full width
(docs/deployment_speed.md). Inductor fuses such work into its products, so this script checks
whether that closes the gap. It uses the same encoders and inputs as ``pruned_speed.py``: the dense
encoder (``--size``), and L0 and LRF at ``--sparsity``. Each one runs the offline call (``--batch``
utterances of ``--seconds`` s) in three runtimes: eager PyTorch, ``torch.compile(dynamic=False)``
of the module (its compile time is recorded) and ONNX Runtime. All nine calls are timed
interleaved (``pruned_speed.interleaved_medians``: one warm-up, ``--rounds`` rounds in alternating
order). Per runtime, the script reports the median time per call, the speed-up against the dense
encoder in the same runtime, and that speed-up divided by the MAC reduction. The load average is
recorded; above ``pruned_speed.MAX_LOAD`` it refuses to run.

    python benchmarks/compiled_runtime.py      # writes benchmarks/results/compiled_runtime.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from pruned_speed import (
    MAX_LOAD,
    SparsitySelector,
    dense_encoder,
    interleaved_medians,
    lrf_encoder,
    structured_scores,
    workload_inputs,
)

from kdlab.compress.param_count import expected_macs_per_second
from kdlab.deploy.encoder_runtime import encoder_call

RESULT = Path(__file__).resolve().parent / "results" / "compiled_runtime.json"
RUNTIMES = ("eager", "inductor", "onnxruntime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="teacher_config preset, or study (default: default)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    if load_before[0] > MAX_LOAD:
        sys.exit(f"refusing to measure: the 1-minute load average is {load_before[0]:.2f} > {MAX_LOAD}")
    torch.set_num_threads(args.threads)
    dense = dense_encoder(args.size)
    encoders = {
        "dense": dense,
        f"l0-{args.sparsity}": SparsitySelector(dense, structured_scores(dense)).materialise(args.sparsity)[0].eval(),
        f"lrf-{args.sparsity}": lrf_encoder(dense, args.sparsity),
    }
    inputs = workload_inputs(dense.config.input_dim, args.batch, args.seconds, dense.config.subsampling_factor)
    features, lengths = inputs["features"], inputs["lengths"]
    macs0 = float(expected_macs_per_second(dense, deterministic=True))
    calls, rows = {runtime: [] for runtime in RUNTIMES}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, encoder in encoders.items():
            compiled = torch.compile(encoder, dynamic=False)
            with torch.inference_mode():  # compiled for the mode it is timed in
                start = time.perf_counter()
                out = compiled(features, lengths)[0]
                compile_s = time.perf_counter() - start
                max_diff = float((out - encoder(features, lengths)[0]).abs().max())
            calls["eager"].append(encoder_call(encoder, features, lengths, "eager"))
            calls["inductor"].append(lambda c=compiled: c(features, lengths))
            folder = Path(tmp) / name
            folder.mkdir()
            calls["onnxruntime"].append(encoder_call(encoder, features, lengths, "onnxruntime", folder, args.threads))
            macs = float(expected_macs_per_second(encoder, deterministic=True))
            rows.append(
                {"name": name, "mac_reduction": macs0 / macs, "compile_s": compile_s, "inductor_max_abs_diff": max_diff}
            )
            print(f"{name}: compiled in {compile_s:.0f} s (max |inductor - eager| {max_diff:.1e})", flush=True)
    order = [(runtime, i) for runtime in RUNTIMES for i in range(len(rows))]
    medians, _ = interleaved_medians([calls[r][i] for r, i in order], rounds=args.rounds, calls=1)
    seconds = dict(zip(order, medians))
    for i, row in enumerate(rows):
        for runtime in RUNTIMES:
            speedup = seconds[(runtime, 0)] / seconds[(runtime, i)]
            row[runtime] = {
                "offline_median_s": seconds[(runtime, i)],
                "speedup_vs_dense": speedup,
                "ratio_to_mac_reduction": speedup / row["mac_reduction"],
            }
            print(
                f"{runtime:11s} {row['name']:8s} {seconds[(runtime, i)] * 1e3:7.1f} ms  speed-up {speedup:.2f}  "
                f"MACs / {row['mac_reduction']:.2f}  ratio {speedup / row['mac_reduction']:.2f}"
            )
    result = {
        "what": __doc__.splitlines()[0],
        "size": args.size,
        "offline_batch": args.batch,
        "offline_seconds": args.seconds,
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}; load average before {load_before[0]:.2f}, after {result['load_average_after'][0]:.2f}")


if __name__ == "__main__":
    main()
