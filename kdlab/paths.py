"""Where kdlab keeps generated things (corpus cache, runs, outputs) and finds its lessons.

Generated things go under `home()`: `$KDLAB_HOME` if set, else the project checkout when kdlab
runs from one (git-ignored folders), else `~/kdlab` for an installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
INSTALLED_HOME = Path("~/kdlab")


def running_from_checkout() -> bool:
    """True when the package sits in a project checkout (pyproject.toml beside it), not in site-packages."""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "notebooks").is_dir()


def home() -> Path:
    """Root folder for generated data: `$KDLAB_HOME`, else the checkout, else `~/kdlab`."""
    if "KDLAB_HOME" in os.environ:
        return Path(os.environ["KDLAB_HOME"])
    return PROJECT_ROOT if running_from_checkout() else INSTALLED_HOME.expanduser()


def notebooks_dir() -> Path:
    """The lessons (`NN_name.ipynb`): `kdlab/notebooks`, a link to `notebooks/` in a checkout and a
    copy inside an installed package (`python -m kdlab notebooks --copy DIR` copies them out)."""
    return PACKAGE_DIR / "notebooks"


def data_cache() -> Path:
    """Folder holding generated corpora: `<home>/data/cache`."""
    return home() / "data" / "cache"


def runs_dir() -> Path:
    """Folder holding training runs: `<home>/runs`."""
    return home() / "runs"


def outputs_dir() -> Path:
    """Folder holding executed notebooks, reports and study results: `<home>/outputs`."""
    return home() / "outputs"
