"""`python -m kdlab pretrain`: BEST-RQ self-supervised pre-training of the teacher encoder."""

from __future__ import annotations

import argparse

from kdlab.commands._option_types import (
    add_corpus_options,
    add_force,
    add_training_options,
    check_accelerator,
    non_negative_int,
    output_folder,
    positive_int,
    threads_used,
)

HELP = "pre-train the conformer encoder with BEST-RQ (masked prediction of random-projection codes) into runs/"
PROFILES = ("tiny", "default", "full")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="tiny (tests, seconds), default (the teacher, ~5 min on 2 CPU cores), full (GPU)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: the profile's budget)"
    )
    parser.add_argument(
        "--run-dir",
        type=output_folder,
        default=None,
        help="run folder (default: runs/teacher-<profile>-<hash>/pretrain)",
    )
    add_force(parser)
    add_training_options(parser)
    add_corpus_options(parser, tokenizer=False)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    check_accelerator(args.profile, args.device)
    from kdlab.train.recipes.pretrain import PretrainConfig, run_pretrain

    config = PretrainConfig.for_profile(args.profile, args.seed, steps=args.steps, corpus_dir=args.corpus)
    result = run_pretrain(config, args.run_dir, device=args.device, progress=not args.no_progress, force=args.force)
    m = result.metrics
    print(f"run dir:          {result.run_dir}")
    print(f"encoder params:   {m['encoder_params'] / 1e6:.2f} M")
    print(f"steps:            {m['steps']} (trained {m['wall_seconds']:.0f} s on {m['device']}, {threads_used(m)})")
    print(f"dev masked acc.:  {m['dev_masked_accuracy']:.3f} (chance {m['chance_accuracy']:.4f})")
    return 0
