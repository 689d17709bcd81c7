"""The pinned package sets agree, and the command line lists every command."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

import kdlab.commands
from kdlab.paths import PROJECT_ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements_pins() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"requirements.txt: {line!r} is not pinned as name==version"
            pins[_normalise(match[1])] = match[2]
    return pins


def _environment_pins() -> tuple[dict[str, str], str]:
    """pip pins and the python version of environment.yml."""
    pins, python = {}, ""
    for line in (PROJECT_ROOT / "environment.yml").read_text().splitlines():
        item = line.split("#", 1)[0].strip()
        if not item.startswith("- "):
            continue
        item = item[2:].strip()
        if item.startswith("python="):
            python = item.split("=", 1)[1]
        elif match := PIN.match(item):
            pins[_normalise(match[1])] = match[2]
    return pins, python


def test_requirements_and_environment_pin_the_same_packages_and_versions():
    requirements = _requirements_pins()
    environment, _ = _environment_pins()
    assert requirements, "requirements.txt pins no packages"
    only_requirements = {k: v for k, v in requirements.items() if environment.get(k) != v}
    only_environment = {k: v for k, v in environment.items() if requirements.get(k) != v}
    assert not only_requirements and not only_environment, (
        f"requirements.txt and environment.yml differ: requirements.txt has {only_requirements}, "
        f"environment.yml has {only_environment}"
    )


def test_environment_python_satisfies_requires_python():
    _, python = _environment_pins()
    requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    assert python, "environment.yml does not pin python=X.Y"
    assert tuple(int(p) for p in python.split(".")[:2]) >= minimum, (
        f"environment.yml python={python} but pyproject needs {requires}"
    )


def _pyproject_requirements() -> dict[str, list[str]]:
    """{group: [requirement, ...]}: "dependencies", each extra, and "build-system"."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    groups = {
        "dependencies": pyproject["project"]["dependencies"],
        "build-system": pyproject["build-system"]["requires"],
    }
    groups.update(pyproject["project"]["optional-dependencies"])
    return groups


def test_pyproject_dependencies_extras_and_build_system_are_exactly_the_pinned_packages():
    pins = _requirements_pins()
    listed = {}
    for group, requirements in _pyproject_requirements().items():
        for text in requirements:
            requirement = Requirement(text)
            name = _normalise(requirement.name)
            assert name in pins, f"pyproject {group}: {name} is not pinned in requirements.txt"
            assert requirement.specifier.contains(pins[name]), (
                f"pyproject {group} wants {text} but requirements.txt pins {name}=={pins[name]}"
            )
            listed[name] = group
    unlisted = sorted(set(pins) - set(listed))
    assert not unlisted, f"requirements.txt pins {unlisted}, which pyproject lists neither as dependency nor extra"
    assert {"lab", "test", "export"} <= set(_pyproject_requirements())


def test_build_backend_is_pinned_so_builds_need_no_download():
    (backend,) = _pyproject_requirements()["build-system"]
    requirement = Requirement(backend)
    assert str(requirement.specifier) == f"=={_requirements_pins()[_normalise(requirement.name)]}", (
        f"build-system requires {backend}; pin it to the setuptools of requirements.txt"
    )


def test_cli_help_lists_every_command_with_its_help_line():
    result = subprocess.run(
        [sys.executable, "-m", "kdlab", "--help"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    names = [m.name for m in pkgutil.iter_modules(kdlab.commands.__path__) if not m.name.startswith("_")]
    assert "notebooks" in names
    help_text = " ".join(result.stdout.split())
    for name in names:
        module = importlib.import_module(f"kdlab.commands.{name}")
        assert re.search(rf"^\s+{name}\s", result.stdout, re.MULTILINE), (
            f"`python -m kdlab --help` does not list {name!r}"
        )
        assert " ".join(module.HELP.split()) in help_text, f"help line of {name!r} missing from --help"
