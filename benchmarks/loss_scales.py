"""Benchmark: how large is each loss part of the two routes' students while they train?

    python benchmarks/loss_scales.py [--profile default] [--ssl-run DIR] [--method kd+l0] [--target 0.5]
                                     [--ctc-steps 40] [--rnnt-steps 60] [--compress-steps 60] [--out FILE]

The KD weights (``JointConfig.distill.layer_weight``, ``CompressConfig.distill.layer_weight`` and
``ssl_weight``, all 1) only mean what they say when the parts they weigh are of comparable size
(docs/study_routes.md). This trains, in a temporary folder, from the SSL encoder of ``--ssl-run``
(default: the profile's BEST-RQ pre-training, trained first when missing):

* a short joint run of ``--method`` (CTC warm-start, then RNN-T + CTC + layer KD from the SSL
  encoder + Lagrangian, RNN-T and CTC per token), and
* a short sequential compression of the same method (BEST-RQ + layer KD + Lagrangian),

and reports each loss part of the history's "train" records: its first and last logged value and
its median over the run, so their ratios can be read off.

Writes benchmarks/results/loss_scales.json (other profiles: loss_scales-<profile>.json; ``--out``)
with those numbers, the settings, wall seconds and load averages. The numbers are magnitudes, not
timings; a busy machine changes only how long it takes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdlab.train.recipes.compress import run_compress
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.compress_teacher import ssl_teacher
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.joint import run_joint
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.pretrain import PretrainResult, corpus_folder, load_pretrain
from kdlab.train.recipes.profiles import PROFILES
from kdlab.train.recipes.runs import load_average
from kdlab.train.recipes.student_spec import METHODS

RESULTS = Path(__file__).resolve().parent / "results"


def part_scales(history) -> dict:
    """{loss part: {"first", "last", "median"}} over the "train" records of ``history``."""
    records = history.of("train")
    names = sorted({k for r in records for k in r if k.startswith("loss_")})
    out = {}
    for name in names:
        values = [r[name] for r in records if name in r]
        out[name] = {"first": values[0], "last": values[-1], "median": statistics.median(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=list(PROFILES), default="default")
    parser.add_argument("--ssl-run", default=None, help="a complete pre-training run folder (default: the profile's)")
    parser.add_argument("--method", choices=METHODS, default="kd+l0")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--ctc-steps", type=int, default=40)
    parser.add_argument("--rnnt-steps", type=int, default=60)
    parser.add_argument("--compress-steps", type=int, default=60)
    parser.add_argument("--frames-per-batch", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), load_average()

    compress = CompressConfig.for_profile(
        args.profile,
        args.method,
        args.target,
        steps=args.compress_steps,
        frames_per_batch=args.frames_per_batch,
        latency_seconds=1.0,
    )
    ssl: PretrainResult = load_pretrain(args.ssl_run) if args.ssl_run else ssl_teacher(compress, device="cpu")
    pretrain = ssl.config
    joint = JointConfig.for_profile(
        args.profile,
        args.method,
        args.target,
        ctc_steps=args.ctc_steps,
        steps=args.rnnt_steps,
        recovery_steps=0,
        latency=False,
        frames_per_batch=args.frames_per_batch,
        dev_eval_utterances=20,
        eval_every=0,
        checkpoint_every=0,
    )
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        ssl.cmvn,
        joint.tokenizer,
    )
    with tempfile.TemporaryDirectory() as folder:
        joint_run = run_joint(joint, ssl.encoder, data, Path(folder) / "joint", device="cpu", progress=False)
        compress_run = run_compress(
            compress,
            ssl.model,
            data.train_loader(compress.frames_per_batch, compress.seed),
            Path(folder) / "compress",
            device="cpu",
            progress=False,
        )
        result = {
            "profile": args.profile,
            "method": args.method,
            "target_sparsity": args.target,
            "ssl_run": str(ssl.run_dir),
            "frames_per_batch": args.frames_per_batch,
            "joint": {
                "ctc_steps": args.ctc_steps,
                "rnnt_steps": args.rnnt_steps,
                "kd_weight": joint.distill.layer_weight,
                "ctc_weight": joint.ctc_warmup.aux_weight,
                "parts": part_scales(joint_run.history),
            },
            "sequential_compression": {
                "steps": args.compress_steps,
                "ssl_weight": compress.ssl_weight,
                "kd_weight": compress.distill.layer_weight,
                "parts": part_scales(compress_run.history),
            },
        }
    result.update(
        wall_seconds=time.perf_counter() - start,
        load_average_1min=[load_before, load_average()],
        threads=args.threads,
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    out = (
        Path(args.out)
        if args.out
        else RESULTS / ("loss_scales.json" if args.profile == "default" else f"loss_scales-{args.profile}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for route in ("joint", "sequential_compression"):
        parts = ", ".join(f"{k} {v['median']:.3g}" for k, v in result[route]["parts"].items())
        print(f"{route}: median {parts}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
