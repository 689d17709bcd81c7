"""CPU speed of materialised (physically smaller) encoders vs the dense one, in eager PyTorch and ONNX Runtime.

What is compared (one process, same threads): the dense encoder (``--size``: a ``teacher_config``
preset, or ``study`` for the default profile's teacher; random weights, seed 0), and for each
sparsity s in 0.3 / 0.5 / 0.7 and the study's default target (0.75)

* **L0**: the structured pattern that L0 pruning produces, without training: every head / FFN unit
  / conv channel is scored by weight magnitude (the L2 norm of its output-projection slice; FFN
  units times their ``linear1`` row norm), scores are rank-normalised inside each gate so every
  structure loses about the same fraction, residual branches go last, and
  ``SparsitySelector`` closes the lowest-scoring units (deterministic gates) until the
  materialised count is ≤ (1 − s) · params₀; then ``materialise``.
* **LRF**: ``factorise_encoder(method="budget")`` at the same parameter budget, then ``materialise``.

Runtimes: ``eager`` (the PyTorch modules) and ``onnxruntime`` (each encoder exported by
``kdlab.deploy.onnx_export.export_encoder``, checked, run by ONNX Runtime's CPU provider with the
same thread count). Timings: one warm-up call each, then ``--rounds`` rounds in which every model
is timed once (alternating order); reported are the median time per call and the median over
rounds of the per-round speed-up vs the dense encoder *of the same runtime*. Interleaving makes
every model see the same machine load.

* ``offline_b16``: the whole-utterance forward of a batch of ``--batch`` utterances of ``--seconds`` s;
* ``stream_b1``: one chunk step (16 frames of 40 ms = 64 input frames) of one stream after 2 s of
  left context. Eager: ``stream()`` on a copy of the state (the copy is included); ONNX Runtime:
  one call of the exported chunk step with its caches. Same weights with ``streaming=True``.

Load: timings on a shared CPU mean little. The 1-minute load average is recorded before and after;
above ``MAX_LOAD`` before the start the script refuses to measure unless ``--allow-load`` is given
(and then the result says so: such numbers are not to be committed).

Checks (issue 15), on the fastest runtime: for L0 at 0.5 and 0.7 and LRF at 0.5, offline speed-up
≥ 0.9 × the MAC reduction and streaming speed-up ≥ 0.7 × the streaming MAC reduction; no
encoder with fewer MACs than the dense one is slower than it in any column.

    python benchmarks/pruned_speed.py                     # writes benchmarks/results/pruned_speed.json
    python benchmarks/pruned_speed.py --readme README.md  # and the table in README's "Use your compressed model"
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlab.compress.factorise import encoder_param_budget, factorise_encoder
from kdlab.compress.materialise import CompressedEncoderSpec, build_encoder, encoder_spec, materialise
from kdlab.compress.param_count import expected_macs_per_second
from kdlab.compress.sparsity_selection import SparsitySelector
from kdlab.compress.structures import attach_gates
from kdlab.deploy.graphs import chunk_input_frames, initial_caches
from kdlab.deploy.onnx_export import TOLERANCE, export_encoder
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.train.recipes.profiles import PROFILES

RESULT = Path(__file__).resolve().parent / "results" / "pruned_speed.json"
#: The issue's sparsities and the study's default target.
STUDY_TARGET = PROFILES["default"].target_sparsity
SPARSITIES = tuple(sorted({0.3, 0.5, 0.7, STUDY_TARGET}))
CHUNK_MS = 640  # a streaming chunk: 16 encoder frames at 4x subsampling, 8 at 8x
CONTEXT_SECONDS = 2.0
STREAM_CALLS = 100  # chunk calls per timing: a chunk takes 3-15 ms, 10 calls left ratios to the host's noise
MAX_LOAD = 1.5
#: (method, sparsity) rows the issue's ratios apply to, and the required fractions of the MAC reduction.
CHECKED = tuple(sorted({("l0", 0.5), ("l0", 0.7), ("lrf", 0.5), ("l0", STUDY_TARGET), ("lrf", STUDY_TARGET)}))
OFFLINE_RATIO, STREAM_RATIO = 0.9, 0.7
RUNTIMES = ("eager", "onnxruntime")
#: Score of a residual branch gate: above every unit score, so whole branches are removed last.
BRANCH_SCORE = 2.0


def dense_encoder(size: str) -> ConformerEncoder:
    """Random dense encoder (seed 0, eval): a ``teacher_config`` preset, or "study" (the default profile's teacher)."""
    torch.manual_seed(0)
    if size == "study":
        profile = PROFILES["default"]
        config = teacher_config(profile.encoder_size, **{**profile.encoder_overrides, "dropout": 0.0})
    else:
        config = teacher_config(size, dropout=0.0)
    return ConformerEncoder(config).eval()


def unit_magnitudes(encoder: ConformerEncoder, name: str, kind: str) -> torch.Tensor:
    """(n,) magnitude of each unit of the gate called ``name`` (see the module docstring)."""
    module = encoder.get_submodule(name.removesuffix("_gate") if kind == "branches" else name)
    if kind == "heads":
        columns = module.out_proj.weight.reshape(module.out_proj.out_features, module.num_heads, module.head_dim)
        return columns.norm(dim=(0, 2))
    if kind == "ffn_units":
        return module.linear2.weight.norm(dim=0) * module.linear1.weight.norm(dim=1)
    if kind == "conv_channels":
        return module.pointwise2.weight.norm(dim=0)
    raise ValueError(f"no magnitude for gate kind {kind!r}")


@torch.no_grad()
def structured_scores(encoder: ConformerEncoder) -> dict[str, torch.Tensor]:
    """Gate name -> (n,) scores in (0, 1): rank of the unit's magnitude inside its gate / (n + 1)."""
    gates = attach_gates(copy.deepcopy(encoder))
    scores = {}
    for name, kind in gates.kinds.items():
        if kind == "branches":
            scores[name] = torch.full((1,), BRANCH_SCORE)
            continue
        order = unit_magnitudes(encoder, name, kind).argsort()
        ranks = torch.empty(order.numel())
        ranks[order] = torch.arange(1, order.numel() + 1, dtype=torch.float32)
        scores[name] = ranks / (order.numel() + 1)
    return scores


def lrf_encoder(dense: ConformerEncoder, sparsity: float) -> ConformerEncoder:
    factorised = copy.deepcopy(dense)
    factorise_encoder(factorised, method="budget", param_budget=encoder_param_budget(dense, sparsity))
    return materialise(factorised).eval()


def chunk_frames(encoder: ConformerEncoder) -> int:
    """Encoder frames in a streaming chunk of ``CHUNK_MS``."""
    return CHUNK_MS // (10 * encoder.config.subsampling_factor)


def streaming_copy(encoder: ConformerEncoder) -> ConformerEncoder:
    """The same weights with ``streaming=True`` (chunked attention, causal depthwise convolution)."""
    spec = encoder_spec(encoder)
    config = {**spec.conformer, "streaming": True, "chunk_size": chunk_frames(encoder)}
    streaming = build_encoder(CompressedEncoderSpec(config, spec.lowrank_ranks))
    streaming.load_state_dict(encoder.state_dict())
    return streaming.eval()


def eager_workloads(encoder: ConformerEncoder, inputs: dict):
    """(offline call, one-chunk streaming call) of ``encoder`` in eager PyTorch."""
    streaming = streaming_copy(encoder)
    with torch.inference_mode():
        _, state = streaming.stream(inputs["context"])

    def one_chunk():
        out, _ = streaming.stream(inputs["chunk"], copy.deepcopy(state))
        assert out.shape[1] == chunk_frames(encoder)

    return (lambda: encoder(inputs["features"], inputs["lengths"])), one_chunk


def onnx_session(path: Path, threads: int, profile: bool = False):
    """An ONNX Runtime session (CPU provider) of the graph at ``path``; ``profile``: record every
    call's kernels in a JSON file beside it (``session.end_profiling()`` names it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_profiling = profile
    options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_workloads(encoder: ConformerEncoder, inputs: dict, folder: Path, threads: int):
    """(offline call, one-chunk streaming call, worst check difference) of ``encoder`` in ONNX Runtime."""
    streaming = streaming_copy(encoder)
    diffs = [
        export_encoder(encoder, folder / "offline.onnx"),
        export_encoder(streaming, folder / "chunk.onnx", streaming=True),
    ]
    offline, chunk = onnx_session(folder / "offline.onnx", threads), onnx_session(folder / "chunk.onnx", threads)
    names = [i.name for i in chunk.get_inputs()][2:]
    caches = [c.numpy() for c in initial_caches(streaming, 1)]
    context = inputs["context"].numpy()
    stride, frames = encoder.config.subsampling_factor, chunk_frames(encoder)
    overlap = stride - 1  # input frames a chunk shares with the next
    step = chunk_input_frames(frames, stride) - overlap
    for first in range(0, context.shape[1] - overlap - step + 1, step):  # the context, chunk by chunk
        window = context[:, first : first + step + overlap]
        caches = chunk.run(
            None,
            {"features": window, "position": np.array(first // stride, dtype=np.int64), **dict(zip(names, caches))},
        )[2:]
    position = np.array((context.shape[1] - overlap) // stride // frames * frames, dtype=np.int64)
    chunk_feed = {
        "features": inputs["chunk"][:, : chunk_input_frames(frames, stride)].numpy(),
        "position": position,
        **dict(zip(names, caches)),
    }
    offline_feed = {"features": inputs["features"].numpy(), "lengths": inputs["lengths"].numpy()}

    def one_chunk():
        out = chunk.run(None, chunk_feed)
        assert out[0].shape[1] == frames

    return (lambda: offline.run(None, offline_feed)), one_chunk, max(diffs)


def workload_inputs(input_dim: int, batch: int, seconds: float, stride: int) -> dict:
    """Fixed random inputs (seed 0) shared by every model and runtime (``stride``: the subsampling factor)."""
    generator = torch.Generator().manual_seed(0)
    chunk = CHUNK_MS // 10  # input frames of a chunk, without the window's overlap
    frames = round(100 * seconds) + stride - 1
    context_frames = round(100 * CONTEXT_SECONDS) // chunk * chunk + stride - 1
    return {
        "features": torch.randn(batch, frames, input_dim, generator=generator),
        "lengths": torch.full((batch,), frames),
        "context": torch.randn(1, context_frames, input_dim, generator=generator),
        "chunk": torch.randn(1, chunk + stride - 1, input_dim, generator=generator),
    }


def interleaved_medians(fns: list, rounds: int, calls: int) -> tuple[list[float], list[float]]:
    """Time every fn once per round (``calls`` calls each, mean), rounds in alternating order.

    Returns per fn the median seconds per call and the median over rounds of (fn 0 time / fn time),
    i.e. the speed-up vs the first fn measured under the same load.
    """
    times = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:  # warm-up
            fn()
        for r in range(rounds):
            order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
            for i in order:
                start = time.perf_counter()
                for _ in range(calls):
                    fns[i]()
                times[i].append((time.perf_counter() - start) / calls)
    medians = [statistics.median(t) for t in times]
    speedups = [statistics.median(b / t for b, t in zip(times[0], ts)) for ts in times]
    return medians, speedups


def checks(rows: list[dict], runtime: str) -> dict:
    """The issue's checks for one runtime (see the module docstring)."""
    ratios = {}
    for method, sparsity in CHECKED:
        row = next((r for r in rows if r["method"] == method and r["target_sparsity"] == sparsity), None)
        if row is None:  # not measured (--sparsities)
            continue
        column = row[runtime]
        ratios[f"{method}-{sparsity}"] = {
            "offline_ratio": column["offline_speedup"] / row["mac_reduction"],
            "stream_ratio": column["stream_speedup"] / row["streaming_mac_reduction"],
        }
    slower = [
        f"{r['name']} {c}"
        for r in rows[1:]
        for c in ("offline", "stream")
        if r["mac_reduction"] > 1 and r[runtime][f"{c}_speedup"] < 1.0
    ]
    passed = (
        all(v["offline_ratio"] >= OFFLINE_RATIO and v["stream_ratio"] >= STREAM_RATIO for v in ratios.values())
        and not slower
    )
    return {
        "ratios": ratios,
        "required": {"offline": OFFLINE_RATIO, "stream": STREAM_RATIO},
        "slower_than_dense": slower,
        "pass": passed,
    }


README_START, README_END = "<!-- kdlab-pruned-speed:start -->", "<!-- kdlab-pruned-speed:end -->"


def readme_table(result: dict, command: str) -> str:
    """The README block: per model, MAC reduction and speed-up vs dense in each runtime and column."""
    lines = [
        README_START,
        "",
        f"Written by `{command}` (load average {result['load_average_before'][0]:.2f} before, "
        f"{result['threads']} threads, {result['cpu_count']} CPUs, batch {result['offline_batch']} × "
        f"{result['offline_seconds']:g} s offline, one 640 ms chunk after 2 s streaming; speed-up = dense time / "
        "model time in the same runtime, median over interleaved rounds).",
        "",
        "| model | params | MACs ÷ | eager offline | eager stream | ONNX Runtime offline | ONNX Runtime stream "
        "| ONNX Runtime stream (ms / chunk) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["models"]:
        eager, ort = row["eager"], row["onnxruntime"]
        lines.append(
            f"| {row['name']} | {row['params'] / 1e6:.2f} M | {row['mac_reduction']:.2f} | "
            f"{eager['offline_speedup']:.2f}× | {eager['stream_speedup']:.2f}× | "
            f"{ort['offline_speedup']:.2f}× | "
            f"{ort['stream_speedup']:.2f}× | {ort['stream_b1_median_s'] * 1e3:.1f} |"
        )
    return "\n".join(lines + ["", README_END])


def update_readme(readme: Path, result: dict, command: str) -> None:
    """Replace the README's pruned-speed block (refused for numbers measured under load)."""
    if result["measured_under_load"]:
        raise SystemExit("not writing the README table: these numbers were measured under load (--allow-load)")
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} block to fill")
    readme.write_text(text[:start] + readme_table(result, command) + text[end + len(README_END) :], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="teacher_config preset, or study (default: default)")
    parser.add_argument("--seconds", type=float, default=10.0, help="offline utterance length (default: 10)")
    parser.add_argument("--batch", type=int, default=16, help="offline batch size (default: 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default: 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default: 5)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help=f"measure even if the load average is above {MAX_LOAD} (the result says so)",
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--readme", type=Path, default=None, help="also write the table into this README's block")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if load_before[0] > MAX_LOAD and not args.allow_load:
        print(
            f"refusing to measure: the 1-minute load average is {load_before[0]:.2f} > {MAX_LOAD} (other jobs share "
            "the CPU, so speed-up ratios would be noise). Rerun on an idle machine, or pass --allow-load to "
            "measure anyway (such numbers are not to be committed).",
            file=sys.stderr,
        )
        sys.exit(2)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dense = dense_encoder(args.size)
    selector = SparsitySelector(dense, structured_scores(dense))
    models = [("dense", "dense", 0.0, dense)]
    for sparsity in args.sparsities:
        models.append((f"l0-{sparsity}", "l0", sparsity, selector.materialise(sparsity)[0].eval()))
        models.append((f"lrf-{sparsity}", "lrf", sparsity, lrf_encoder(dense, sparsity)))
    params0 = dense.num_parameters()
    macs0 = float(expected_macs_per_second(dense, deterministic=True))
    stream_macs0 = float(expected_macs_per_second(streaming_copy(dense), deterministic=True))
    inputs = workload_inputs(dense.config.input_dim, args.batch, args.seconds, dense.config.subsampling_factor)
    rows, fns = [], {runtime: ([], []) for runtime in RUNTIMES}
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, target, encoder in models:
            macs = float(expected_macs_per_second(encoder, deterministic=True))
            stream_macs = float(expected_macs_per_second(streaming_copy(encoder), deterministic=True))
            offline, stream = eager_workloads(encoder, inputs)
            fns["eager"][0].append(offline)
            fns["eager"][1].append(stream)
            offline, stream, diff = onnx_workloads(encoder, inputs, Path(tmp) / name, args.threads)
            fns["onnxruntime"][0].append(offline)
            fns["onnxruntime"][1].append(stream)
            rows.append(
                {
                    "name": name,
                    "method": method,
                    "target_sparsity": target,
                    "params": encoder.num_parameters(),
                    "sparsity": 1 - encoder.num_parameters() / params0,
                    "macs_per_second": macs,
                    "mac_reduction": macs0 / macs,
                    "streaming_mac_reduction": stream_macs0 / stream_macs,
                    "onnx_max_abs_diff": diff,
                }
            )
            assert diff <= TOLERANCE, f"{name}: ONNX Runtime differs from PyTorch by {diff}"
        for runtime, (offline_fns, stream_fns) in fns.items():
            offline_s, offline_speedup = interleaved_medians(offline_fns, args.rounds, 1)
            stream_s, stream_speedup = interleaved_medians(stream_fns, args.rounds, STREAM_CALLS)
            for i, row in enumerate(rows):
                row[runtime] = {
                    "offline_b16_median_s": offline_s[i],
                    "offline_speedup": offline_speedup[i],
                    "offline_real_time_factor": offline_s[i] / (args.batch * args.seconds),
                    "stream_b1_median_s": stream_s[i],
                    "stream_speedup": stream_speedup[i],
                    "stream_real_time_factor": stream_s[i] / (CHUNK_MS / 1000),
                }
                print(
                    f"{runtime:11s} {row['name']:8s} params {row['params'] / 1e6:5.2f} M  "
                    f"MACs /{row['mac_reduction']:4.2f}  "
                    f"offline b{args.batch} {offline_s[i] * 1e3:7.1f} ms (x{offline_speedup[i]:4.2f})  "
                    f"stream b1 {stream_s[i] * 1e3:6.2f} ms (x{stream_speedup[i]:4.2f}, MACs /"
                    f"{row['streaming_mac_reduction']:4.2f})",
                    flush=True,
                )
    total = {rt: sum(r[rt]["offline_b16_median_s"] + r[rt]["stream_b1_median_s"] for r in rows) for rt in RUNTIMES}
    fastest = min(total, key=total.get)
    load_after = os.getloadavg()
    under_load = load_before[0] > MAX_LOAD
    result = {
        "what": __doc__.split("\n\n")[0],
        "encoder_config": dense.config.to_dict(),
        "dense_params": params0,
        "offline_batch": args.batch,
        "offline_seconds": args.seconds,
        "stream_chunk_frames": chunk_frames(dense),
        "stream_context_seconds": CONTEXT_SECONDS,
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "measured_under_load": under_load,
        "wall_seconds": time.perf_counter() - start,
        "fastest_runtime": fastest,
        "models": rows,
        "checks": {rt: checks(rows, rt) for rt in RUNTIMES}
        if not under_load
        else f"not computed: load average {load_before[0]:.2f} > {MAX_LOAD} before the start (--allow-load)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"fastest runtime: {fastest}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(json.dumps(result["checks"], indent=1))
    if args.readme is not None:
        update_readme(args.readme, result, "python " + " ".join(["benchmarks/pruned_speed.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
