"""Run folders of the recipes: names from a config hash, a completion marker, the final result.

A run folder holds ``config.json`` and ``history.json`` (written by the trainer),
``checkpoints/last.pt`` (resume), the final weights and ``result.json``; ``result.json`` is
written last, so its presence means the run is complete and can be reused as is.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RESULT = "result.json"
#: Config keys that do not change a run's numbers (left out of its hash).
NOT_HASHED = {"device", "progress"}


def config_digest(config: dict) -> str:
    """10-hex-digit hash of a JSON-like config, ignoring ``device`` and ``progress`` at any depth."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in NOT_HASHED}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(strip(config), sort_keys=True).encode()).hexdigest()[:10]


def read_result(run_dir: str | Path) -> dict | None:
    """The run's ``result.json``, or None while the run is not complete."""
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(run_dir: str | Path, result: dict) -> None:
    """Write ``result.json`` atomically (the run's completion marker)."""
    path = Path(run_dir) / RESULT
    tmp = path.with_name(f".{RESULT}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): wall times on a shared
    machine mean little without it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "checkpoints" / "last.pt").is_file()
