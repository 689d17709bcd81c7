"""A panel's plotly figure, shown in an ipywidgets ``Output`` whose state is the figure it draws.

Why not plotly's ``FigureWidget``: its widget state carries plotly.js itself (about 5 MB of
JavaScript per figure, evaluated once per figure), and a page (re)loading a notebook whose kernel
holds some parses all of it before any panel is drawn. On a busy machine that passes two 2 s
limits of the browser side (issue 19): anywidget's ("[anywidget] Failed to initialize model.")
and the widget manager's (``get_model`` gives up after 2 s without a last look, so a panel whose
model arrived during a long restore shows "Error displaying widget: model not found"). Its
in-place edits also never reached the saved state, so a reload showed the figure as built.

Here the figure is a plain ``go.Figure`` (``pane.figure``, edited in place) and the widget an
``Output`` holding one display output, the figure's plotly JSON (a few kB, drawn by JupyterLab's
own plotly renderer). ``with pane.editing(): ...`` redraws once at the end by setting the
Output's ``outputs``, which is its synced state: the page, a reloaded page and a report
(``kdlab.widget_snapshot``) all show what the panel's controls and status say.

A reload can still log "widget model not found" from a renderer JupyterLab discards while the
page loads (the panel itself is drawn; tests/jupyterlab_pages.py, ``HIDDEN_WIDGET_RENDER_ERRORS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import plotly.graph_objects as go

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def figure_output(figure: go.Figure) -> dict:
    """One nbformat display output (a dict) showing ``figure`` with plotly's mimetype."""
    title = figure.layout.title.text or "figure"
    return {
        "output_type": "display_data",
        "data": {PLOTLY_MIMETYPE: json.loads(figure.to_json()), "text/plain": f"<plotly figure: {title}>"},
        "metadata": {},
    }


def output_figure(state: dict) -> dict | None:
    """The plotly figure dict an ``Output`` widget's state shows, or None when it shows none."""
    for output in state.get("outputs", ()):
        figure = output.get("data", {}).get(PLOTLY_MIMETYPE)
        if figure is not None:
            return figure
    return None


class FigurePane:
    """``figure`` (a ``go.Figure``) drawn in ``widget`` (an ipywidgets ``Output``); see the module docstring."""

    def __init__(self, figure: go.Figure) -> None:
        import ipywidgets as widgets

        self.figure = go.Figure(figure)
        self.widget = widgets.Output(layout={"width": "100%"})
        self.redraw()

    def redraw(self) -> None:
        """Show the figure as it is now (replaces the Output's one display output)."""
        self.widget.outputs = (figure_output(self.figure),)

    @contextmanager
    def editing(self) -> Iterator[go.Figure]:
        """``with pane.editing() as figure: figure.data[0].y = ...`` — one redraw when the block ends."""
        yield self.figure
        self.redraw()

    def shown(self) -> dict | None:
        """The figure dict the widget's state holds: what a (re)loading page or a report draws."""
        return output_figure(self.widget.get_state(["outputs"]))
