"""Where kdlab keeps generated things: corpus cache, runs, outputs.

All default to folders of the project checkout (git-ignored); set `KDLAB_HOME`
to put them elsewhere (for example on a bigger disk).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """Root folder for generated data (`$KDLAB_HOME`, else the project checkout)."""
    return Path(os.environ.get("KDLAB_HOME", PROJECT_ROOT))


def data_cache() -> Path:
    """Folder holding generated corpora: `<home>/data/cache`."""
    return home() / "data" / "cache"


def runs_dir() -> Path:
    """Folder holding training runs: `<home>/runs`."""
    return home() / "runs"


def outputs_dir() -> Path:
    """Folder holding executed notebooks, reports and study results: `<home>/outputs`."""
    return home() / "outputs"
