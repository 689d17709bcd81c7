"""Checks of the lessons' parameters, run in the cell right after each notebook's ``parameters`` cell.

    check_parameters(profile=profile, seed=seed, steps=steps)

papermill injects values as given (``-p seed abc`` is the string "abc"); without a check a bad
value fails cells later, deep inside torch or without its name. ``check_parameters`` fails at
once with a ``ValueError`` naming the parameter, what it must be and what it got, and also when
papermill injected a name the notebook does not declare (a typo would otherwise run with the
defaults). Every name a lesson declares has a rule in ``RULES`` (a test checks that), so a new
parameter needs one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kdlab.compress.methods import METHODS

PROFILES = ("tiny", "default", "full")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _integer(minimum: int, optional: bool = False) -> Callable[[Any], str | None]:
    def rule(value):
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"an integer >= {minimum}" + (" or None" if optional else "")
        return None

    return rule


def _number(low: float, high: float, closed_high: bool, optional: bool = False, open_low: bool = False):
    def rule(value):
        if optional and value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value > low if open_low else value >= low) and (value <= high if closed_high else value < high)
        if not ok:
            interval = f"{'(' if open_low else '['}{low:g}, {high:g}{']' if closed_high else ')'}"
            return f"a number in {interval}" + (" or None" if optional else "")
        return None

    return rule


def _choice(options: tuple[str, ...]):
    return lambda value: None if value in options else f"one of {', '.join(options)}"


def _optional_bool(value):
    return None if value is None or isinstance(value, bool) else "True, False or None"


def _optional_folder(value):
    return None if value is None or (isinstance(value, str) and value.strip()) else "a folder path (text) or None"


def _device(value):
    return None if isinstance(value, str) and _DEVICE.fullmatch(value) else "auto, cpu, cuda or cuda:N"


def _methods(value):
    if value is None or (isinstance(value, (list, tuple)) and value and all(m in METHODS for m in value)):
        return None
    return f"None or a non-empty list drawn from {', '.join(METHODS)}"


INFINITY = float("inf")
RULES: dict[str, Callable[[Any], str | None]] = {
    "profile": _choice(PROFILES),
    "seed": _integer(0),
    "seeds": _integer(1),
    "n_examples": _integer(1),
    "steps": _integer(1, optional=True),
    "target_sparsity": _number(0.0, 1.0, closed_high=False, optional=True),
    "temperature": _number(0.0, INFINITY, closed_high=False, open_low=True),
    "energy": _number(0.0, 1.0, closed_high=True, open_low=True),
    "feed_ms": _number(0.0, INFINITY, closed_high=False, optional=True, open_low=True),
    "method": _choice(METHODS),
    "methods": _methods,
    "device": _device,
    "corpus_dir": _optional_folder,
    "train_random_init": _optional_bool,
}


def check_parameters(**parameters: Any) -> None:
    """ValueError naming the first parameter whose value breaks its rule (``RULES``), a name without
    a rule, or a name papermill injected that is not among `parameters` (the notebook's declared ones)."""
    undeclared = sorted(injected_names() - set(parameters))
    if undeclared:
        raise ValueError(
            f"papermill parameter(s) {', '.join(undeclared)} are not parameters of this notebook "
            f"(it has {', '.join(parameters)}); check the spelling"
        )
    for name, value in parameters.items():
        if name not in RULES:
            raise ValueError(f"notebook parameter {name!r} has no rule in kdlab.lessons.parameters.RULES; add one")
        expected = RULES[name](value)
        if expected is not None:
            raise ValueError(
                f"notebook parameter {name} must be {expected}, got {value!r} ({type(value).__name__}); "
                f"set it in the parameters cell or with papermill -p {name} VALUE"
            )


def injected_names() -> set[str]:
    """Names assigned in the cell papermill injected into this kernel (its source starts with
    "# Parameters"; read from IPython's input history), or none outside a papermill run."""
    import ast

    try:
        from IPython import get_ipython
    except ImportError:
        return set()
    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell is not None else []
    injected = next((source for source in reversed(history) if source.startswith("# Parameters")), None)
    if injected is None:
        return set()
    return {
        target.id
        for node in ast.parse(injected).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def declared_parameters(notebook) -> dict[str, Any]:
    """{name: default} assigned in the cell tagged ``parameters`` of an nbformat notebook."""
    import ast

    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {
                target.id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
    return {}
