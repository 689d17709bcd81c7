"""Benchmark: does L0 pruning (with and without KD) end at its target sparsity?

    python benchmarks/l0_sparsity.py [--profile default] [--seed 0] [--threads 2] [--device cpu]
                                     [--methods kd+l0 l0] [--targets 0.5] [--steps N] [--out FILE]

For each method and target, runs (or reuses, from ``runs/teacher-<profile>-<hash>/compress-…``) the
task-agnostic compression recipe of ``python -m kdlab compress`` (``compress_profile``) on the
profile's BEST-RQ teacher encoder (trained first when missing), then reads:

* ``expected_sparsity_end``: ŝ = 1 − E[params] / params₀ of the last history record, the quantity
  the Lagrangian drives to the target (hard-concrete gates in expectation);
* ``materialised_sparsity``: 1 − params of the materialised (physically smaller) encoder /
  params₀, both counted on the models (``num_parameters()``);
* their distance to the target and whether it is within ±``TOLERANCE``.

Both sparsities are over the **whole encoder** (params₀ = the teacher's ``num_parameters()``,
subsampling front-end and each block's final LayerNorm included), as the recipe defines them.
Those parts are never pruned, so a structured method cannot exceed ``max_sparsity`` =
prunable / params₀, where "prunable" counts the parameters of the gated residual branches (the
two FFNs, attention and convolution of every block). ``prunable_sparsity`` = removed parameters /
prunable parameters says how much of what L0 *can* remove it removed.

Writes benchmarks/results/l0_sparsity.json (other profiles: l0_sparsity-<profile>.json; ``--out``) with the
rows, steps, wall time of each compression (as recorded when it ran) and whether this invocation
trained it, the benchmark's wall seconds, threads, device, load averages, torch / python / machine.

Acceptance (issue 4, item 5): kd+l0 at target 0.5 ends within ±0.03 of the target, both in
expectation and materialised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from kdlab.compress.structures import BRANCHES
from kdlab.models.conformer import ConformerEncoder
from kdlab.train.recipes.compress import CompressResult
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.compress_teacher import compress_profile, default_compress_dir, ssl_teacher
from kdlab.train.recipes.pretrain import PretrainConfig, default_pretrain_dir
from kdlab.train.recipes.profiles import PROFILES
from kdlab.train.recipes.runs import load_average, read_result
from kdlab.train.recipes.student_spec import METHODS, uses_gates

RESULTS = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.03
ACCEPTANCE = ("kd+l0", 0.5)


def prunable_params(encoder: ConformerEncoder) -> int:
    """Parameters of the residual branches L0 gates (FFNs, attention, convolution of every block)."""
    return sum(
        p.numel()
        for block in encoder.blocks
        for name in BRANCHES
        if getattr(block, name) is not None
        for p in getattr(block, name).parameters()
    )


def sparsity_row(config: CompressConfig, result: CompressResult, teacher: ConformerEncoder, trained_now: bool) -> dict:
    """The numbers of one compression run (see the module docstring)."""
    dense, params = teacher.num_parameters(), result.encoder.num_parameters()
    prunable = prunable_params(teacher)
    expected = (result.history.last("record") or {}).get("expected_sparsity")
    materialised = 1.0 - params / dense
    m = result.metrics
    return {
        "method": config.method,
        "target_sparsity": config.target_sparsity,
        "run_dir": str(result.run_dir),
        "trained_now": trained_now,
        "steps": m["steps"],
        "warmup_steps": config.warmup_steps,
        "wall_seconds": round(m["wall_seconds"], 1),
        "device": m["device"],
        "expected_sparsity_end": expected,
        "abs_error_expected": None if expected is None else round(abs(expected - config.target_sparsity), 4),
        "expected_within_tolerance": expected is not None and abs(expected - config.target_sparsity) <= TOLERANCE,
        "materialised_sparsity": round(materialised, 4),
        "abs_error_materialised": round(abs(materialised - config.target_sparsity), 4),
        "materialised_within_tolerance": abs(materialised - config.target_sparsity) <= TOLERANCE,
        "dense_encoder_params": dense,
        "materialised_encoder_params": params,
        "prunable_params": prunable,
        "max_sparsity": round(prunable / dense, 4),
        "prunable_sparsity": round((dense - params) / prunable, 4),
        "final_loss_distill": m["final_loss_distill"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0, help="compression seed (the teacher's is 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default, the acceptance setting), auto or cuda")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["kd+l0", "l0"],
        choices=[m for m in METHODS if uses_gates(m)],
        help="methods with L0 gates (default: kd+l0 l0)",
    )
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5], help="target sparsities (default: 0.5)")
    parser.add_argument("--steps", type=int, default=None, help="compression steps (default: the profile's budget)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result file (default: results/l0_sparsity.json, l0_sparsity-<profile>.json for other profiles)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load = {"start": load_average()}
    start = time.perf_counter()
    teacher_cached = read_result(default_pretrain_dir(PretrainConfig.for_profile(args.profile, 0))) is not None
    rows = []
    for method in args.methods:
        for target in args.targets:
            config = CompressConfig.for_profile(args.profile, method, target, args.seed, args.steps)
            teacher = ssl_teacher(config, args.device, progress=False)
            cached = read_result(default_compress_dir(config, teacher)) is not None
            result = compress_profile(config, device=args.device, progress=False)
            rows.append(sparsity_row(config, result, teacher.encoder, trained_now=not cached))
            load[f"after_{method}_{target:g}"] = load_average()
            r = rows[-1]
            print(
                f"{method:>9s} target {target:.2f}: expected {r['expected_sparsity_end']}, materialised "
                f"{r['materialised_sparsity']:.4f} (max {r['max_sparsity']:.3f}), {r['steps']} steps, "
                f"{r['wall_seconds']:.0f} s",
                flush=True,
            )
    checked = next((r for r in rows if (r["method"], r["target_sparsity"]) == ACCEPTANCE), None)
    result = {
        "what": __doc__.splitlines()[0],
        "profile": args.profile,
        "seed": args.seed,
        "teacher_seed": 0,
        "teacher_trained_now": not teacher_cached,
        "tolerance": TOLERANCE,
        "sparsity_definition": "1 - encoder params / teacher encoder params (whole encoder: front-end included)",
        "rows": rows,
        "acceptance": None
        if checked is None
        else {
            "method": ACCEPTANCE[0],
            "target_sparsity": ACCEPTANCE[1],
            "expected_within_tolerance": checked["expected_within_tolerance"],
            "materialised_within_tolerance": checked["materialised_within_tolerance"],
            "pass": checked["expected_within_tolerance"] and checked["materialised_within_tolerance"],
        },
        "benchmark_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": args.threads,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    name = "l0_sparsity.json" if args.profile == "default" else f"l0_sparsity-{args.profile}.json"
    out = args.out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["acceptance"], indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
