"""TensorBoard event files of training runs: every scalar of every history record.

`python -m kdlab <training command> --tensorboard DIR` sets ``KDLAB_TENSORBOARD=DIR`` for the
process (and so for the processes it starts: torchrun ranks, study workers); every `Trainer` then
writes its records to ``DIR/<run>`` (``<run>``: the run folder relative to ``kdlab.paths.runs_dir()``,
else its name). Tags are ``<kind>/<key>``: ``train/loss``, ``train/lr``, ``train/loss_distill``,
``eval/dev_wer``, ``record/expected_sparsity``, ``record/lambda1``, ``record/ranks/<matrix>`` ...
Lists (per-unit gate probabilities) stay in history.json only. Watch with
``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

TENSORBOARD_ENV = "KDLAB_TENSORBOARD"


def tensorboard_root() -> Path | None:
    """The folder runs log to (``$KDLAB_TENSORBOARD``), or None when TensorBoard logging is off."""
    folder = os.environ.get(TENSORBOARD_ENV)
    return Path(folder) if folder else None


def run_log_folder(root: Path, run_dir: Path | None) -> Path:
    """Where the events of the run in `run_dir` go under `root` (one folder per run)."""
    from kdlab.paths import runs_dir

    if run_dir is None:
        return root / "run"
    try:
        return root / Path(run_dir).resolve().relative_to(runs_dir().resolve())
    except ValueError:
        return root / Path(run_dir).name


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """{"<key>[/<subkey>]": number} of a record's finite numbers (nested dicts flattened; lists left out)."""
    found = {}
    for key, value in record.items():
        if key in ("kind", "step") and not prefix:
            continue
        if isinstance(value, dict):
            found.update(scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[f"{prefix}{key}"] = float(value)
    return found


class TensorBoardLog:
    """Writes history records as TensorBoard scalars; ``purge_step`` (a resumed run's step + 1) drops
    the events an earlier process wrote from that step on (after its last checkpoint), so a resumed
    run shows one line."""

    def __init__(self, folder: str | Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("--tensorboard needs the tensorboard package: pip install -r requirements.txt") from error
        self.writer = SummaryWriter(str(folder), purge_step=purge_step or None)

    def __call__(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
