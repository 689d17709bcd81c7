"""`python -m kdlab finetune`: RNN-T fine-tuning of the teacher, offline or streaming."""

from __future__ import annotations

import argparse
from dataclasses import replace

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

HELP = "fine-tune the conformer for RNN-T ASR (SSL or random init, offline or streaming) into runs/; prints WER"
PROFILES = ("tiny", "default", "full")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="tiny (tests, seconds), default (the teacher, minutes on 2 CPU cores with its pre-training), full (GPU)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="chunked attention + causal convolution (chunk size and frame length from the profile)",
    )
    parser.add_argument(
        "--init",
        choices=("ssl", "random", "offline"),
        default=None,
        help="ssl: start from the profile's BEST-RQ run (pre-trained first if missing); random; offline (with "
        "--streaming): from the profile's fine-tuned offline teacher (trained first if missing) (default: ssl, "
        "and the profile's choice for --streaming: offline at default)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="fine-tuning steps (default: the profile's budget)"
    )
    parser.add_argument("--beam", type=positive_int, default=None, help="also report beam search with this beam width")
    parser.add_argument(
        "--run-dir",
        type=output_folder,
        default=None,
        help="run folder (default: runs/teacher-<profile>-<hash>/finetune-<mode>-<init>-<hash>)",
    )
    add_force(parser)
    add_training_options(parser)
    add_corpus_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    check_accelerator(args.profile, args.device)
    from kdlab.train.recipes.finetune import run_finetune
    from kdlab.train.recipes.teacher import teacher_finetune_config

    config = teacher_finetune_config(
        args.profile, args.seed, args.streaming, args.init, args.steps, args.corpus, args.tokenizer
    )
    if args.beam is not None:
        config = replace(config, decode_method="beam", beam=args.beam)
    result = run_finetune(config, args.run_dir, device=args.device, progress=not args.no_progress, force=args.force)
    m = result.metrics
    frame_ms = 10 * config.encoder.subsampling_factor
    mode = f"streaming (chunk {config.chunk_size * frame_ms} ms)" if config.streaming else "offline"
    print(f"run dir:      {result.run_dir}")
    print(
        f"model:        {m['params'] / 1e6:.2f} M params (encoder {m['encoder_params'] / 1e6:.2f} M), "
        f"{mode}, {config.init} init"
    )
    print(f"steps:        {m['steps']} (trained {m['wall_seconds']:.0f} s on {m['device']}, {threads_used(m)})")
    for split in ("dev", "test"):
        line = f"{split} greedy:  WER {m[split]['wer']:.2%}  CER {m[split]['cer']:.2%}"
        if f"{split}_beam" in m:
            line += f"  | beam {config.beam}: WER {m[split + '_beam']['wer']:.2%}"
        print(line)
    return 0
