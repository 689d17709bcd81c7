"""Benchmark: the teacher's quality and cost, SSL vs random init, offline vs streaming.

    python benchmarks/asr_quality.py [--profile default] [--seed 0] [--threads 2] [--device cpu]

(Train the runs first with `kdlab finetune --profile default [--init random] [--streaming]
--processes 2` to use both cores; this script then reuses them.)

Runs (or reuses, from the teacher cache ``runs/teacher-<profile>-<hash>/``) in one process:
BEST-RQ pre-training once, then RNN-T fine-tuning from the SSL encoder and from random weights
with the same budget, and the streaming teacher (chunked attention; from the SSL encoder or, as the
default profile has it, from the offline teacher: ``teacher_finetune_config``). Writes
benchmarks/results/asr_quality.json (other profiles: asr_quality-<profile>.json) with dev / test
WER and CER (greedy) of each on dev, test and the held-out test sets (unseen engine, unseen text),
parameter counts, wall times of each training (as recorded when it ran, with CPU seconds: on a
shared machine one process's CPU seconds / its threads estimates idle-core wall time:
``teacher_idle_estimate_minutes``), whether it was trained by this invocation, processes, threads,
device and the load averages before and after each run.

Acceptance (default profile, 2 CPU cores): pre-training + CTC warm-start + offline fine-tuning <= 8 min
(issue 13), offline teacher test WER in [3 %, 20 %], SSL init beats random init, CER on the unseen
engine <= 35 % (issue 20).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from kdlab.train.recipes.finetune import default_finetune_dir
from kdlab.train.recipes.profiles import PROFILES
from kdlab.train.recipes.runs import read_result
from kdlab.train.recipes.teacher import ensure_teacher, teacher_finetune_config

RESULTS = Path(__file__).resolve().parent / "results"
TEACHER_MINUTES = 8.0
WER_RANGE = (0.03, 0.20)
UNSEEN_ENGINE_MAX_CER = 0.35
SPLITS = ("dev", "test", "test_unseen_engine", "test_unseen_text")
RUNS = {
    "offline_ssl": dict(streaming=False, init="ssl"),
    "offline_random": dict(streaming=False, init="random"),
    "streaming": dict(streaming=True),  # the profile's start
}


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default, the acceptance setting), auto or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs, load = {}, {"start": _load()}
    start = time.perf_counter()
    for name, options in RUNS.items():
        config = teacher_finetune_config(args.profile, args.seed, **options)
        cached = read_result(default_finetune_dir(config)) is not None
        teacher = ensure_teacher(args.profile, args.seed, device=args.device, **options)
        load[f"after_{name}"] = _load()
        m = teacher.metrics
        runs[name] = {
            "run_dir": str(teacher.finetune.run_dir),
            "trained_now": not cached,
            "streaming": config.streaming,
            "chunk_ms": config.chunk_size * 40 if config.streaming else None,
            "init": config.init,
            "steps": m["steps"],
            "params": m["params"],
            "encoder_params": m["encoder_params"],
            "ctc_warmup_seconds": round(m.get("ctc_warmup", {}).get("wall_seconds", 0.0), 1),
            "ctc_warmup_cpu_seconds": round(m.get("ctc_warmup", {}).get("cpu_seconds", 0.0), 1),
            "load_average_1min": m.get("load_average_1min"),
            "finetune_seconds": round(m["wall_seconds"], 1),
            "finetune_cpu_seconds": round(m["cpu_seconds"], 1),
            "eval_seconds": round(m["eval_seconds"], 1),
            "processes": m.get("processes", 1),
            "threads": m["torch_threads"],
            "device": m["device"],
            **{split: m[split] for split in SPLITS if split in m},
        }
        if teacher.pretrain is not None:
            pm = teacher.pretrain.metrics
            pretrain = {
                "run_dir": str(teacher.pretrain.run_dir),
                "steps": pm["steps"],
                "encoder_params": pm["encoder_params"],
                "seconds": round(pm["wall_seconds"], 1),
                "cpu_seconds": round(pm["cpu_seconds"], 1),
                "processes": pm.get("processes", 1),
                "dev_masked_accuracy": pm["dev_masked_accuracy"],
                "chance_accuracy": pm["chance_accuracy"],
                "threads": pm["torch_threads"],
                "load_average_1min": pm.get("load_average_1min"),
                "device": pm["device"],
            }
    offline = runs["offline_ssl"]
    teacher_seconds = pretrain["seconds"] + offline["ctc_warmup_seconds"] + offline["finetune_seconds"]
    # CPU seconds of one process (rank 0) / its threads: its wall time had it had its cores to itself
    idle_estimate = (
        pretrain["cpu_seconds"] / pretrain["threads"]
        + (offline["ctc_warmup_cpu_seconds"] + offline["finetune_cpu_seconds"]) / offline["threads"]
    )
    offline_wer = runs["offline_ssl"]["test"]["wer"]
    unseen_engine_cer = offline.get("test_unseen_engine", {}).get("cer")
    result = {
        "profile": args.profile,
        "seed": args.seed,
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "load_average_1min": load,
        "benchmark_seconds": round(time.perf_counter() - start, 1),
        "pretrain": pretrain,
        "finetune": runs,
        "teacher_train_minutes": round(teacher_seconds / 60, 2),
        "teacher_idle_estimate_minutes": round(idle_estimate / 60, 2),
        "acceptance": {
            "teacher_within_8_min": teacher_seconds <= TEACHER_MINUTES * 60,
            "offline_test_wer_in_3_to_20_percent": WER_RANGE[0] <= offline_wer <= WER_RANGE[1],
            "ssl_beats_random": offline_wer < runs["offline_random"]["test"]["wer"],
            "unseen_engine_cer_at_most_35_percent": unseen_engine_cer is not None
            and unseen_engine_cer <= UNSEEN_ENGINE_MAX_CER,
        },
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("asr_quality.json" if args.profile == "default" else f"asr_quality-{args.profile}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
