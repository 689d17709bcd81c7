"""Atomic checkpoint files.

``save_checkpoint`` writes to a temporary file in the same folder and renames it over the
target with ``os.replace`` (atomic on POSIX and Windows), so a crash while saving leaves the
previous checkpoint intact. ``load_checkpoint`` uses ``weights_only=True``: checkpoints hold
only tensors, numbers, strings and containers (configs as dicts), never pickled objects.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"checkpoint {path} is damaged or not a kdlab checkpoint ({error}); delete it or resume from another one"
        ) from error
