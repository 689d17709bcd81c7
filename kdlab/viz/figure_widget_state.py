"""Updating a plotly ``FigureWidget`` so that its saved widget state follows what it shows.

plotly sends in-place edits (``figure.data[0].y = ...``) to the browser as one-off messages and
keeps the widget's synced state (``_widget_data``, ``_widget_layout``) as it was when the figure
was built. A page that (re)loads the widget from the kernel — a browser reload, a reopened
notebook — and a report drawn from the saved state (``kdlab.report.widget_snapshot``) would then show
the figure as built while the controls and status show their current values.
``live_update(figure)`` batches the edits like ``figure.batch_update()`` and then stores the
figure's current traces and layout as its state. The browser's view ignores a state change of
these two traits (it redraws only on the edit messages), so nothing is drawn twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import plotly.graph_objects as go


def store_state(figure: go.FigureWidget) -> None:
    """Make the widget state that a (re)loading page receives equal to the figure's current content."""
    figure._widget_data = copy.deepcopy(figure._data)
    figure._widget_layout = copy.deepcopy(figure._layout_obj._props)


@contextmanager
def live_update(figure: go.FigureWidget) -> Iterator[go.FigureWidget]:
    """``with live_update(figure): figure.data[0].y = ...`` — one batched redraw, state kept current."""
    with figure.batch_update():
        yield figure
    store_state(figure)
