"""Notebook parameters are checked in the cell right after each `parameters` cell, and `kdlab
notebooks` refuses parameters no notebook declares (issue 16)."""

import ast

import nbformat
import pytest

from kdlab.lessons.parameters import METHODS, PROFILES, RULES, check_parameters, declared_parameters
from kdlab.report import notebook_runner as nr
from kdlab.train.recipes.profiles import PROFILES as RECIPE_PROFILES
from kdlab.train.recipes.student_spec import METHODS as RECIPE_METHODS

NOTEBOOKS = nr.discover_notebooks(nr.default_notebooks_dir())


def _cells(path):
    notebook = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    return notebook, notebook.cells[index + 1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_cell_after_parameters_checks_every_declared_parameter_and_the_defaults_pass(path):
    notebook, check_cell = _cells(path)
    declared = declared_parameters(notebook)
    call = next(
        node.value
        for node in ast.parse(check_cell.source).body
        if isinstance(node, ast.Expr) and getattr(node.value.func, "id", "") == "check_parameters"
    )
    assert sorted(k.arg for k in call.keywords) == sorted(declared)
    assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in call.keywords)
    assert not check_cell.outputs and check_cell.execution_count is None
    check_parameters(**declared)  # the committed defaults are valid


def test_rules_agree_with_the_recipes():
    assert METHODS == RECIPE_METHODS and PROFILES == tuple(RECIPE_PROFILES)
    assert {"profile", "seed", "steps", "target_sparsity"} <= set(RULES)


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("seed", "abc", "seed must be an integer >= 0, got 'abc' (str)"),
        ("seed", True, "seed must be an integer"),
        ("target_sparsity", "abc", "target_sparsity must be a number in [0, 1) or None, got 'abc'"),
        ("target_sparsity", 1.0, "target_sparsity must be a number in [0, 1)"),
        ("profile", "nope", "profile must be one of tiny, default, full, got 'nope'"),
        ("steps", 0, "steps must be an integer >= 1 or None"),
        ("device", "gpu", "device must be auto, cpu, cuda or cuda:N"),
        ("methods", ["l0", "xx"], "methods must be None or a non-empty list"),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter(name, value, fragment):
    with pytest.raises(ValueError) as error:
        check_parameters(**{name: value})
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "injected, fragment",
    [
        ({"seed": "abc"}, "ValueError: notebook parameter seed must be an integer >= 0, got 'abc'"),
        ({"sede": 3}, "ValueError: papermill parameter(s) sede are not parameters of this notebook"),
    ],
)
def test_papermill_with_a_bad_or_unknown_parameter_stops_in_the_check_cell(tmp_path, injected, fragment):
    source = nr.default_notebooks_dir() / "00_corpus.ipynb"
    with pytest.raises(nr.NotebookFailed) as failed:
        nr.execute_notebook(
            source, tmp_path / "out.ipynb", {"profile": "tiny", **injected}, nr.resolve_kernel(), progress=False
        )
    assert fragment in str(failed.value)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.execution_count is not None]
    assert "check_parameters" in ran[-1].source  # nothing after the check ran


def test_outside_papermill_nothing_counts_as_injected():
    from kdlab.lessons.parameters import injected_names

    assert injected_names() == set()
