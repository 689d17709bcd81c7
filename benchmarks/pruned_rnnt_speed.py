"""Benchmark: the default teacher's RNN-T + CTC training step with the full vs the pruned transducer loss.

    OMP_NUM_THREADS=1 nice python benchmarks/pruned_rnnt_speed.py [--ranges 4 5 8] [--warmup 2] [--rounds 6]
                                                                  [--steps 2] [--threads 1] [--profile default]

Each set-up is the profile's RNN-T phase (``train_throughput.PhaseRunner``: RNNTWithCTC, CTC weight
0.3, AdamW, batches of the profile's ``frames_per_batch`` from the default corpus) with ``rnnt``
``prune_range`` 0 (full lattice) or S in ``--ranges``. Every set-up starts from the same weights
(seed 0; the simple joiner is drawn after the rest) and reads the same batches in the same order,
so step i of every set-up trains on the same batch. After ``--warmup`` untimed steps each, rounds
interleave the set-ups (the order rotates every round; ``--steps`` steps each), so a busy moment of
the machine hits all of them. Timed per step: CPU and wall seconds of the whole step (next batch,
forward, backward, clip, AdamW). Timed apart ("loss"): the transducer loss alone, forward and
backward from a fixed encoder output (the first batch's), which is where pruning acts (predictor,
joiners, log-softmax, DP). Timed apart ("dp"), forward and backward over the same batch's lattice
(the full joiner's logits): torchaudio's ``rnnt_loss`` over the (B, T', U+1, V) logits, torchaudio's
``rnnt_loss`` over the two-symbol (blank, next label) lattice of their log-softmax
(``fused_log_softmax=False``), and kdlab's ``lattice_nll`` over that lattice.

Writes benchmarks/results/pruned_rnnt_speed.json: per set-up the median step CPU / wall seconds and
the median loss seconds; per pruned set-up the median over steps of the paired ratio full / pruned
(step CPU seconds, and loss seconds); the median "dp" seconds of each DP; the batches' mean B, T',
U+1; threads; load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torchaudio.functional import rnnt_loss
from train_throughput import RESULTS, PhaseRunner, SetUp, load_data, make_tokenizer

from kdlab.models.subsampling import subsampled_length
from kdlab.models.transducer_lattice import lattice_nll
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import load_average


def timed_step(runner: PhaseRunner) -> dict:
    """One training step of `runner` (as ``PhaseRunner.step``) with the batch's lattice shape."""
    start, cpu = time.perf_counter(), time.process_time()
    batch = runner._next_batch()
    runner.optimizer.zero_grad(set_to_none=True)
    runner.loss(batch).backward()
    torch.nn.utils.clip_grad_norm_(runner.model.parameters(), 5.0)
    runner.optimizer.step()
    factor = runner.model.rnnt.encoder.config.subsampling_factor
    return {
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - start,
        "batch": int(batch.features.shape[0]),
        "frames": int(subsampled_length(int(batch.feature_lengths.max()), factor)),
        "labels": int(batch.token_lengths.max()) + 1,
    }


def timed_loss(runner: PhaseRunner, enc: torch.Tensor, enc_lengths: torch.Tensor, batch) -> float:
    """CPU seconds of the transducer loss, forward and backward, from a fixed encoder output."""
    rnnt = runner.model.rnnt
    leaf = enc.detach().requires_grad_(True)
    cpu = time.process_time()
    loss, _ = rnnt.transducer_loss(leaf, enc_lengths, batch.tokens, batch.token_lengths)
    loss.backward()
    seconds = time.process_time() - cpu
    rnnt.zero_grad(set_to_none=True)
    return seconds


def dp_timings(logits: torch.Tensor, tokens: torch.Tensor, enc_lengths, token_lengths) -> dict[str, float]:
    """CPU seconds, forward and backward, of the three DPs over logits (B, T', U+1, V) (module docstring)."""
    batch, frames, labels, _ = logits.shape
    following = torch.cat([tokens, tokens.new_zeros(batch, 1)], dim=1).long()[:, None, :, None]
    log_probs = logits.log_softmax(dim=-1)
    two = torch.stack([log_probs[..., 0], log_probs.gather(3, following.expand(-1, frames, -1, 1))[..., 0]], dim=-1)
    ones = torch.ones_like(tokens, dtype=torch.int32)
    calls = {
        "torchaudio_full_logits": lambda x: rnnt_loss(x, tokens.int(), enc_lengths.int(), token_lengths.int(), blank=0),
        "torchaudio_two_symbol": lambda x: rnnt_loss(
            x, ones, enc_lengths.int(), token_lengths.int(), blank=0, fused_log_softmax=False
        ),
        "kdlab_two_symbol": lambda x: lattice_nll(x, enc_lengths, token_lengths)[0].mean(),
    }
    seconds = {}
    for name, call in calls.items():
        leaf = (logits if name == "torchaudio_full_logits" else two).detach().requires_grad_(True)
        cpu = time.process_time()
        call(leaf).backward()
        seconds[name] = time.process_time() - cpu
    return seconds


def measure(args, data, base: SetUp, names: dict[str, int], tokenizer) -> tuple[dict, dict, dict, list[int]]:
    """(per set-up results, median "dp" seconds, the timed batches' mean B / T' / U+1, the probe's [B, T', U+1])."""
    runners = {
        name: PhaseRunner(replace(base, rnnt={**base.rnnt, "prune_range": s}), "rnnt", data, tokenizer)
        for name, s in names.items()
    }
    probe = [runner._next_batch() for runner in runners.values()][0]  # every runner moves on by the same batch
    with torch.no_grad():
        enc, enc_lengths = runners["full"].model.rnnt.transcribe(probe.features, probe.feature_lengths)
        logits = runners["full"].model.rnnt.logits(enc, enc_lengths, probe.tokens, probe.token_lengths)
    probe_tokens = probe.tokens[:, : logits.shape[2] - 1]
    dp: dict[str, list[float]] = {}
    for runner in runners.values():
        for _ in range(args.warmup):
            timed_step(runner)
        timed_loss(runner, enc, enc_lengths, probe)
    steps: dict[str, list[dict]] = {name: [] for name in names}
    losses: dict[str, list[float]] = {name: [] for name in names}
    order = list(names)
    for round_index in range(args.rounds):
        for name in order[round_index % len(order) :] + order[: round_index % len(order)]:
            steps[name] += [timed_step(runners[name]) for _ in range(args.steps)]
            losses[name] += [timed_loss(runners[name], enc, enc_lengths, probe) for _ in range(args.loss_repeats)]
        for name, seconds in dp_timings(logits, probe_tokens, enc_lengths, probe.token_lengths).items():
            dp.setdefault(name, []).append(seconds)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    results = {
        name: {
            "prune_range": names[name],
            "median_step_cpu_s": round(statistics.median(s["cpu"] for s in steps[name]), 4),
            "median_step_wall_s": round(statistics.median(s["wall"] for s in steps[name]), 4),
            "median_loss_cpu_s": round(statistics.median(losses[name]), 4),
        }
        for name in names
    }
    for name in names:
        if name != "full":
            pairs = zip(steps["full"], steps[name])
            results[name]["step_speedup"] = round(statistics.median(f["cpu"] / p["cpu"] for f, p in pairs), 3)
            ratio = [f / p for f, p in zip(losses["full"], losses[name])]
            results[name]["loss_speedup"] = round(statistics.median(ratio), 3)
    dp_medians = {name: round(statistics.median(v), 4) for name, v in dp.items()}
    shapes = {key: round(statistics.fmean(s[key] for s in steps["full"]), 1) for key in ("batch", "frames", "labels")}
    return results, dp_medians, shapes, [int(enc.shape[0]), int(enc_lengths.max()), int(probe.token_lengths.max()) + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, nargs="+", default=[4, 5, 8], help="prune_range values S")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per set-up before the rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per set-up and round")
    parser.add_argument("--loss-repeats", type=int, default=3, help="loss-only timings per set-up and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/pruned_rnnt_speed.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    profile = get_profile(args.profile)
    data = load_data(args.profile)
    base = SetUp.of_profile(profile)
    names = {"full": 0, **{f"pruned_s{s}": s for s in args.ranges}}
    with tempfile.TemporaryDirectory(prefix="kdlab-pruned-") as tmp:
        results, dp, shapes, probe_shape = measure(
            args, data, base, names, make_tokenizer(base.tokenizer, data, Path(tmp))
        )
    out = {
        "profile": args.profile,
        "threads": args.threads,
        "warmup_steps": args.warmup,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "loss_repeats_per_round": args.loss_repeats,
        "mean_batch": shapes,
        "loss_probe_shape": probe_shape,
        "setups": results,
        "dp_median_cpu_s": dp,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path = Path(args.out) if args.out else RESULTS / "pruned_rnnt_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"setups": results, "dp_median_cpu_s": dp}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
