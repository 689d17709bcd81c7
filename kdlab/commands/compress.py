"""`python -m kdlab compress`: compress the SSL teacher encoder with KD, L0, LRF or a combination."""

from __future__ import annotations

import argparse
import sys

from kdlab.commands._compression_args import add_method_and_target, add_run_options, budget_warning
from kdlab.commands._option_types import add_corpus_options, check_accelerator, non_negative_int, positive_int

HELP = "compress the profile's SSL teacher encoder (kd, l0, lrf, kd+l0, kd+lrf, kd+lrf+l0) to a target sparsity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_method_and_target(
        parser,
        method_help="kd: dense smaller student distilled; l0: hard-concrete pruning; lrf: low-rank factorisation; "
        "'+' combines them; every method trains on the SSL objective (BEST-RQ), kd adds layer-wise "
        "distillation from the SSL encoder",
        profile_help="which SSL teacher and corpus (trained first if missing): tiny, default, full",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the compression (default: 0)")
    parser.add_argument(
        "--teacher-seed", type=non_negative_int, default=0, help="seed of the SSL teacher run (default: 0)"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: the profile's budget)"
    )
    parser.add_argument(
        "--final-distill-steps",
        type=non_negative_int,
        default=0,
        help="after pruning, distil the materialised model this many more steps (default: 0)",
    )
    add_corpus_options(parser, tokenizer=False)
    add_run_options(parser, "run folder (default: runs/teacher-<profile>-<hash>/compress-<method>-<target>-<hash>)")


def run(args: argparse.Namespace) -> int:
    check_accelerator(args.profile, args.device)
    from kdlab.train.recipes.compress_config import CompressConfig
    from kdlab.train.recipes.compress_teacher import compress_profile

    config = CompressConfig.for_profile(
        args.profile,
        args.method,
        args.target_sparsity,
        args.seed,
        args.steps,
        teacher_seed=args.teacher_seed,
        final_distill_steps=args.final_distill_steps,
        calibrate_budget=args.calibrate_budget,
        teacher_corpus_dir=args.corpus,
    )
    result = compress_profile(config, args.run_dir, device=args.device, progress=not args.no_progress, force=args.force)
    m = result.metrics
    print(f"run dir:        {result.run_dir}")
    print(
        f"method:         {m['method']}, {m['steps']} steps (+{m['final_distill_steps']} final distillation), "
        f"{m['wall_seconds']:.0f} s on {m['device']}"
    )
    print(
        f"sparsity:       target {m['target_sparsity']:.3f}, achieved {m['achieved_sparsity']:.3f} "
        f"(materialised {m['params'] / 1e6:.3f} M of {m['teacher_params'] / 1e6:.3f} M params)"
    )
    print(
        f"MACs / s audio: {m['macs_per_second'] / 1e6:.1f} M (teacher {m['teacher_macs_per_second'] / 1e6:.1f} M, "
        f"{m['mac_reduction']:.2f}x fewer)"
    )
    print(
        f"CPU latency:    {m['latency']['median_s'] * 1e3:.1f} ms per {m['latency']['audio_seconds']:g} s utterance "
        f"(teacher {m['teacher_latency']['median_s'] * 1e3:.1f} ms, {m['latency_speedup']:.2f}x, "
        f"{m['torch_threads']} threads)"
    )
    warning = budget_warning(m["achieved_sparsity"], m["target_sparsity"])
    if warning:
        print(warning, file=sys.stderr)
    return 0
