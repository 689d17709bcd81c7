"""Command line: `python -m kdlab <command> [options]`.

Each command lives in its own module under `kdlab/commands/` and exposes
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int | None`.
Command modules keep heavy imports (torch, plotly) inside `run`, so building
the parser stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import kdlab.commands
from kdlab.commands._option_types import apply_training_options


def _command_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(kdlab.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kdlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _command_names():
        module = importlib.import_module(f"kdlab.commands.{name}")
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def _relaunch_under_torchrun(processes: int, argv: list[str]) -> int:
    """Run this command again as `torchrun --standalone --nproc-per-node N -m kdlab ...`; its exit code."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([*command, "-m", "kdlab", *argv], env=env).returncode


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if getattr(args, "processes", 1) > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun
        sys.exit(_relaunch_under_torchrun(args.processes, argv))
    apply_training_options(args)
    if os.environ.get("RANK", "0") != "0":  # torchrun: one report, from rank 0 (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")
    try:
        code = args._module.run(args)
    except (ValueError, OSError) as error:  # bad input (options, files, data): one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        code = 2
    sys.exit(code or 0)
