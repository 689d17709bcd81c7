"""Options shared by the `compress` and `joint` commands (not a command itself: the name starts with _)."""

from __future__ import annotations

import argparse

PROFILES = ("tiny", "default", "full")
#: Kept here (not imported from the recipes) so building the parser stays fast; a test checks it.
METHODS = ("kd", "l0", "lrf", "kd+l0", "kd+lrf", "kd+lrf+l0")


def add_method_and_target(parser: argparse.ArgumentParser, method_help: str, profile_help: str) -> None:
    """--method, --target-sparsity and --profile."""
    parser.add_argument("--method", choices=METHODS, required=True, help=method_help)
    parser.add_argument("--target-sparsity", type=float, required=True,
                        help="fraction of the teacher encoder's parameters to remove, in [0, 1) (0.5 keeps half)")
    parser.add_argument("--profile", choices=PROFILES, default="default", help=profile_help)


def add_run_options(parser: argparse.ArgumentParser, run_dir_help: str) -> None:
    """--device, --run-dir and --no-progress."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--run-dir", default=None, help=run_dir_help)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
