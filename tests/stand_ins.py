"""Small stand-ins and helpers shared by several test files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kdlab.paths import data_cache


class StackEncoder(nn.Module):
    """Stand-in encoder with the kdlab contract: stack 4 frames + Linear + tanh, T' = T // 4."""

    def __init__(self, input_dim: int = 80, d_model: int = 16) -> None:
        super().__init__()
        self.config = SimpleNamespace(d_model=d_model)
        self.linear = nn.Linear(4 * input_dim, d_model)

    def forward(self, features, lengths):
        b, t, f = features.shape
        out = torch.tanh(self.linear(features[:, : t // 4 * 4].reshape(b, t // 4, 4 * f)))
        return out, lengths // 4, [out]


@dataclass
class FakeBatch:
    """The fields of `kdlab.data.batching.Batch` that the RNN-T model reads."""

    features: torch.Tensor
    feature_lengths: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor


def isolated_kdlab_home(root: Path, corpus: Path) -> pytest.MonkeyPatch:
    """Point `KDLAB_HOME` at `root` (empty runs/) that shares the tiny `corpus` and its feature cache.

    Returns the MonkeyPatch; call `.undo()` when done.
    """
    (root / "data" / "cache" / "features").mkdir(parents=True)
    os.symlink(corpus, root / "data" / "cache" / corpus.name)
    features = data_cache() / "features" / corpus.name
    features.mkdir(parents=True, exist_ok=True)
    os.symlink(features, root / "data" / "cache" / "features" / corpus.name)
    patch = pytest.MonkeyPatch()
    patch.setenv("KDLAB_HOME", str(root))
    return patch


def execute_lessons(names: list[str], out: Path, parameters: dict[str, dict] | None = None) -> dict:
    """Run ``notebooks/<name>.ipynb`` headless at profile tiny into `out` (kernels with one thread:
    tiny models gain nothing from more), with ``parameters[name]`` injected too; returns the
    executed notebooks by name."""
    import nbformat
    from jupyter_client.kernelspec import find_kernel_specs

    from kdlab.paths import PROJECT_ROOT
    from kdlab.report import notebook_runner as nr

    kernel = nr.PREFERRED_KERNEL if nr.PREFERRED_KERNEL in find_kernel_specs() else nr.FALLBACK_KERNEL
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # the kernels inherit it (and KDLAB_HOME)
        for name in names:
            nr.execute_notebook(
                PROJECT_ROOT / "notebooks" / f"{name}.ipynb",
                out / f"{name}.ipynb",
                {"profile": "tiny", **(parameters or {}).get(name, {})},
                kernel,
                progress=False,
            )
    return {name: nbformat.read(out / f"{name}.ipynb", as_version=4) for name in names}


def assert_ran_headless_at_tiny(notebook, name: str) -> None:
    """No error output, no papermill exception, every code cell run, profile "tiny" injected once."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    assert not notebook.metadata.papermill.exception
    assert all(cell.execution_count is not None for cell in code), f"{name}: some cells did not run"
    injected = [cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "tiny"' in injected[0].source
    assert_nothing_on_stderr(notebook, name)


def assert_nothing_on_stderr(notebook, name: str) -> None:
    """No cell of the executed notebook wrote to stderr: a warning or log line shows in red to a
    student and must be fixed at its cause (no notebook needs to explain one today)."""
    written = [
        f"cell {i}: {o.text.strip()[:300]}"
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert not written, f"{name} wrote to stderr:\n" + "\n".join(written)


def assert_lesson_explains_and_checks_itself(name: str):
    """The committed ``notebooks/<name>.ipynb`` writes its math in $$ formulas, has >= 3 cells with
    asserts and unique cell ids; returns the notebook."""
    import nbformat

    from kdlab.paths import PROJECT_ROOT

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert "$$" in markdown, f"{name}: the math should be written out in markdown formulas"
    assert sum("assert " in source for source in code) >= 3, f"{name}: cells should check what they show"
    assert len({c.id for c in notebook.cells}) == len(notebook.cells), f"{name}: cell ids must be unique"
    return notebook


def decode_plotly_arrays(value):
    """plotly JSON with its base64 typed arrays ``{"dtype", "bdata"[, "shape"]}`` as numpy arrays."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return array.reshape([int(n) for n in str(shape).split(",")]) if shape else array
    if isinstance(value, dict):
        return {k: decode_plotly_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_plotly_arrays(v) for v in value]
    return value
