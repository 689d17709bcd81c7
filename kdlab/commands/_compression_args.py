"""Options shared by the `compress` and `joint` commands (not a command itself: the name starts with _)."""

from __future__ import annotations

import argparse

from kdlab.commands._option_types import add_force, add_training_options, output_folder, sparsity
from kdlab.compress.methods import METHODS

PROFILES = ("tiny", "default", "full")


def add_method_and_target(parser: argparse.ArgumentParser, method_help: str, profile_help: str) -> None:
    """--method, --target-sparsity and --profile."""
    parser.add_argument("--method", choices=METHODS, required=True, help=method_help)
    parser.add_argument(
        "--target-sparsity",
        type=sparsity,
        required=True,
        help="fraction of the teacher encoder's parameters to remove, in [0, 1) (0.5 keeps half)",
    )
    parser.add_argument("--profile", choices=PROFILES, default="default", help=profile_help)


def add_run_options(parser: argparse.ArgumentParser, run_dir_help: str) -> None:
    """--device, --run-dir, --force, --no-progress and --no-calibrate-budget."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--run-dir", type=output_folder, default=None, help=run_dir_help)
    add_force(parser)
    add_training_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--calibrate-budget",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shift a gated student's gates onto the budget before materialising it, so the "
        "materialised model has the target's parameter count, as the study does "
        "(default: on; --no-calibrate-budget keeps where the Lagrangian ended)",
    )


def budget_warning(achieved: float, target: float) -> str | None:
    """A warning line when the materialised parameter count misses the budget (1 − target) · teacher
    by more than the study's relative tolerance (``kdlab.study.config.BUDGET_TOLERANCE``), else None."""
    from kdlab.study.config import BUDGET_TOLERANCE

    miss = abs(achieved - target) / (1.0 - target)
    if miss <= BUDGET_TOLERANCE:
        return None
    return (
        f"warning: achieved sparsity {achieved:.3f} misses the target {target:.3f} (the parameter count is "
        f"{miss:.1%} off the budget; tolerance {BUDGET_TOLERANCE:.0%}): train longer (--steps), keep "
        "--calibrate-budget on, or read the sparsity curve in the run's history.json"
    )
