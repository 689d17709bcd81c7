"""The study grid at profile tiny, run once per test session and shared (tests/conftest.py).

Every method of the grid, both routes and modes, one seed, through the CLI from an empty runs/
folder, on the lessons' smoke budgets (``RecipeProfile.lesson_grid_smoke``: a few steps per
recipe, the profile's teacher, a short latency measurement). These are the rows notebooks 05 and
06 train at profile tiny, so test_notebooks_joint_study.py runs them on this grid and finds its
rows trained, while test_study.py checks the grid itself.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdlab.train.recipes.profiles import get_profile


def smoke_grid_arguments(profile: str = "tiny") -> list[str]:
    """``python -m kdlab study`` arguments of the lessons' smoke grid of `profile` for every
    method (``kdlab.lessons.study_grid.grid_config(profile)`` with the grid's methods; test_study.py
    checks the two agree), trained by 2 worker processes on the CPU."""
    smoke = get_profile(profile).lesson_grid_smoke
    steps, latency = smoke["steps"], smoke["latency"]
    return [
        "study",
        "--profile",
        profile,
        "--finetune-steps",
        str(steps),
        "--compress-steps",
        str(steps),
        "--recovery-steps",
        str(steps // 2),
        "--latency-seconds",
        str(latency["latency_seconds"]),
        "--latency-min-time",
        str(latency["latency_min_time"]),
        "--latency-runs",
        str(latency["latency_min_runs"]),
        "--device",
        "cpu",
        "--workers",
        "2",
    ]


def run_study_cli(out: Path) -> str:
    """Run the smoke grid through the CLI into `out` (in the current KDLAB_HOME); returns its stdout."""
    from kdlab.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as exit_info:
        main([*smoke_grid_arguments(), "--out", str(out)])
    assert exit_info.value.code == 0, buffer.getvalue()
    return buffer.getvalue()


@dataclass(frozen=True)
class TinyGrid:
    """``home``: its KDLAB_HOME (runs/ and the shared tiny corpus; outputs/ left empty for
    notebook 06); ``out``: the study's output folder; ``stdout``: what the CLI printed;
    ``results``: its results.json."""

    home: Path
    out: Path
    stdout: str
    results: dict


def build_tiny_grid(home: Path) -> TinyGrid:
    """The grid run from nothing in `home`, a KDLAB_HOME sharing the tiny corpus."""
    from stand_ins import isolated_kdlab_home

    from kdlab.data.corpus import ensure_corpus

    patch = isolated_kdlab_home(home, ensure_corpus("tiny", progress=False))
    try:
        out = home / "grid" / "study"
        stdout = run_study_cli(out)
    finally:
        patch.undo()
    return TinyGrid(home, out, stdout, json.loads((out / "results.json").read_text()))
