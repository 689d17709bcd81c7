"""The wheel installs like a package: built from the sources, installed into a fresh virtual
environment (no checkout on the path), it runs `kdlab --help`, builds the tiny corpus from the
grammar shipped inside it, and copies out its lesson notebooks. Nothing is downloaded: the wheel
is built with this environment's pinned setuptools, installed with --no-deps, and the heavy
dependencies (torch, ...) come from this environment's site-packages through a .pth file.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kdlab.paths import PROJECT_ROOT

SOURCES = ["kdlab", "notebooks", "pyproject.toml", "README.md", "LICENSE", "NOTICE"]
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}


def _run(command: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The kdlab wheel, built from a copy of the sources (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        cwd=source,
        env={**os.environ, **OFFLINE},
    )
    (built,) = out.glob("kdlab-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed: its `kdlab` script and an environment without the checkout."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    # A plain path line: the project's packages are importable, its .pth files (an editable kdlab) are not run.
    (venv_site / "project-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        cwd=venv,
        env={**env, **OFFLINE},
    )
    home = tmp_path_factory.mktemp("kdlab-home")
    return {
        "kdlab": str(venv / "bin" / "kdlab"),
        "python": str(python),
        "site": venv_site,
        "home": home,
        "env": {**env, "KDLAB_HOME": str(home)},
    }


def test_wheel_carries_license_grammar_and_notebooks(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    grammar = sorted(p.name for p in (PROJECT_ROOT / "kdlab" / "data" / "grammar").glob("*.txt"))
    lessons = sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    assert grammar and lessons
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("kdlab/data/grammar/")) == grammar
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("kdlab/notebooks/")) == lessons
    assert any(n.endswith("/licenses/LICENSE") for n in names) and any(n.endswith("/licenses/NOTICE") for n in names)


def test_installed_kdlab_is_the_wheel_not_the_checkout(installed, tmp_path):
    where = _run(
        [installed["python"], "-c", "import kdlab, kdlab.paths as p; print(kdlab.__file__); print(p.home())"],
        cwd=tmp_path,
        env=installed["env"],
    ).split()
    assert Path(where[0]).is_relative_to(installed["site"]), f"kdlab imported from {where[0]}, not the wheel"
    assert Path(where[1]) == installed["home"]


def test_installed_help_lists_the_commands(installed, tmp_path):
    help_text = _run([installed["kdlab"], "--help"], cwd=tmp_path, env=installed["env"])
    for command in ("data", "finetune", "notebooks", "study"):
        assert f" {command} " in help_text.replace("\n", " ")


def test_installed_kdlab_builds_the_tiny_corpus_under_kdlab_home(installed, tmp_path):
    _run([installed["kdlab"], "data", "--profile", "tiny"], cwd=tmp_path, env=installed["env"], timeout=600)
    (corpus,) = (installed["home"] / "data" / "cache").glob("tiny-*")
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary and all((corpus / f"{split}.jsonl").stat().st_size > 0 for split in ("train", "dev", "test"))
    assert not list(tmp_path.iterdir()), "kdlab wrote into the working folder instead of KDLAB_HOME"


def test_installed_kdlab_copies_its_notebooks_out(installed, tmp_path):
    _run([installed["kdlab"], "notebooks", "--copy", str(tmp_path / "lessons")], cwd=tmp_path, env=installed["env"])
    copied = sorted(p.name for p in (tmp_path / "lessons").glob("*.ipynb"))
    assert copied == sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb"))
