"""Argument types and options shared by several commands (not a command: the name starts with _).

The types turn a bad value into argparse's one-line usage error naming the option
(``argument --workers: must be an integer >= 1, got 0``) before anything runs.
"""

from __future__ import annotations

import argparse

#: Tokenizer choices as the options show them (``kdlab.train.recipes.corpus_choice`` parses them).
TOKENIZER_HELP = (
    "char (letters, apostrophe, space) or bpe[:N] (sentencepiece BPE with N pieces, default 256, "
    "trained on the corpus's train transcripts and saved with the run) (default: the profile's)"
)


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
    return value


def sparsity(text: str) -> float:
    """A fraction in [0, 1): the share of the teacher encoder's parameters to remove."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g} (the fraction of parameters to remove)")
    return value


def output_folder(text: str) -> str:
    """A folder path that is not an existing file (it may not exist yet)."""
    from pathlib import Path

    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file; give a folder (it is created if missing)")
    return text


def tokenizer_spec(text: str) -> str:
    """ "char", "bpe" or "bpe:N"."""
    from kdlab.train.recipes.corpus_choice import parse_tokenizer_spec

    try:
        parse_tokenizer_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_corpus_options(parser: argparse.ArgumentParser, tokenizer: bool = True) -> None:
    """--corpus DIR and (where a run predicts text) --tokenizer."""
    parser.add_argument(
        "--corpus",
        metavar="DIR",
        default=None,
        help="train on this corpus folder, written by `python -m kdlab data` (synthesised, or your "
        "own data imported with --librispeech / --train-list ...) (default: the profile's "
        "synthetic corpus)",
    )
    if tokenizer:
        parser.add_argument("--tokenizer", type=tokenizer_spec, default=None, help=TOKENIZER_HELP)


def add_force(parser: argparse.ArgumentParser) -> None:
    """--force: replace a run folder that holds a run with other settings (or the same) instead of refusing."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="start afresh in --run-dir even if it holds a run (by default a finished run with the "
        "same settings is reused and one with other settings is refused)",
    )


def check_accelerator(profile: str, device: str) -> None:
    """ValueError when the ``full`` profile would train on a CPU only because ``--device auto`` found
    no GPU (its teacher is 20k steps of a bigger encoder on >= 30 h of audio: days on a CPU)."""
    import torch

    if profile == "full" and device == "auto" and not torch.cuda.is_available():
        raise ValueError(
            "profile 'full' is sized for a GPU (a 20000-step teacher on >= 30 h of audio) and no CUDA "
            "device is available here: use --profile default on a CPU (about an hour for the study), "
            "or --device cpu to train it on this CPU anyway"
        )


def threads_used(metrics: dict) -> str:
    """ "2 threads", or "2 processes x 1 thread" for a data-parallel run (a recipe's result metrics)."""
    processes, threads = metrics.get("processes", 1), metrics["torch_threads"]
    plural = "thread" if threads == 1 else "threads"
    return f"{threads} {plural}" if processes == 1 else f"{processes} processes x {threads} {plural}"


def add_training_options(parser: argparse.ArgumentParser, processes: bool = True) -> None:
    """--tensorboard DIR, --precision and (for a single training run) --processes, for every command
    that trains (applied by `apply_training_options`; --processes by `kdlab.cli`)."""
    if processes:
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=1,
            help="train data-parallel in N processes on this machine (torchrun, one thread each on a CPU); "
            "the profile's frames_per_batch is the batch of one step over all of them, so the run trains the "
            "same recipe on N cores (e.g. 2 on a 2-core laptop; default: 1)",
        )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        type=output_folder,
        default=None,
        help="also write TensorBoard event files of every training run under DIR, one folder per run "
        "(losses, learning rates, expected sparsity, lambda, dev WER); watch with "
        "`tensorboard --logdir DIR`",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="fp32 (default), or bf16: autocast of the training steps' forward pass (for GPUs; the "
        "RNN-T loss stays float32); a bf16 run is another run (its own folder)",
    )


def apply_training_options(args: argparse.Namespace) -> None:
    """Turn --tensorboard / --precision on for this process and those it starts (torchrun ranks, study
    workers): ``kdlab.train.tensorboard_log``, ``kdlab.train.precision``."""
    import os
    from pathlib import Path

    if getattr(args, "tensorboard", None):
        from kdlab.train.tensorboard_log import TENSORBOARD_ENV

        os.environ[TENSORBOARD_ENV] = str(Path(args.tensorboard).resolve())
    if getattr(args, "precision", None):
        from kdlab.train.precision import PRECISION_ENV

        os.environ[PRECISION_ENV] = args.precision
