"""One live panel per notebook cell: re-running a cell closes the widgets its earlier run made.

Every ipywidget stays alive in the kernel until it is closed, even when its output is gone. A
page that (re)loads a notebook fetches every live widget, so without closing them each re-run of
a panel cell adds to what every later reload loads (issue 19: with plotly's ``FigureWidget``, 5 MB
each, a few re-runs made a reload time out; see ``figure_pane``). ``replace_earlier_panels(widget)``
keeps only the widgets of the cell's latest run: JupyterLab names the cell of each execution
(``cellId`` in the request's metadata); outside JupyterLab (papermill, a script) nothing is
closed.
"""

from __future__ import annotations

from collections.abc import Callable

#: cell id -> (execution count of its latest run, the panel widgets that run made)
_LIVE: dict[str, tuple[int, list]] = {}


def running_cell() -> tuple[str, int] | None:
    """(cell id, execution count) of the JupyterLab cell the kernel is running, or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    cell = kernel.get_parent().get("metadata", {}).get("cellId")
    return (str(cell), int(shell.execution_count)) if cell else None


def close_tree(widget) -> None:
    """Close ``widget`` and every widget inside it (boxes do not close their children)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def replace_earlier_panels(widget, where: Callable[[], tuple[str, int] | None] = running_cell) -> None:
    """Register ``widget`` as made by the running cell; close what an earlier run of that cell made."""
    running = where()
    if running is None:
        return
    cell, count = running
    latest, widgets = _LIVE.get(cell, (count, []))
    if latest != count:
        for old in widgets:
            close_tree(old)
        widgets = []
    _LIVE[cell] = (count, widgets + [widget])
