"""Widget views drawn statically from saved widget state (what reports show instead of live widgets)."""

from __future__ import annotations

import base64

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest
from ipywidgets.embed import dependency_state, embed_data
from nbformat.v4 import new_code_cell, new_notebook, new_output
from stand_ins import decode_plotly_arrays

from kdlab.report import widget_snapshot as ws
from kdlab.viz.figure_pane import FigurePane

WAVEFORM = np.linspace(-1, 1, 7, dtype=np.float32)
AUDIO = b"RIFF\x00\x01fake wav bytes"


@pytest.fixture
def panel_notebook():
    """A notebook whose one output is a panel (like the synthesis panel), saved as a headless run saves it."""
    figure = FigurePane(go.Figure(go.Scatter(y=WAVEFORM, name="waveform"))).widget
    panel = widgets.VBox(
        [
            widgets.HBox(
                [
                    widgets.Dropdown(options=["pink", "white"], value="white", description="noise"),
                    widgets.FloatSlider(value=3.0, description="SNR <dB>"),
                ]
            ),
            widgets.HTML("<i>status line</i>"),
            widgets.Audio(value=AUDIO, format="wav"),
            figure,
        ]
    )
    saved = embed_data(views=[panel], state=dependency_state([panel]))  # only this panel, not every live widget
    cell = new_code_cell("panel", execution_count=1)
    cell.outputs = [
        new_output(
            "execute_result",
            data={ws.WIDGET_VIEW_MIMETYPE: saved["view_specs"][0], "text/plain": "VBox(...)"},
            execution_count=1,
        )
    ]
    notebook = new_notebook(cells=[cell])
    notebook.metadata["widgets"] = {ws.WIDGET_STATE_MIMETYPE: saved["manager_state"]}
    for item in (panel, figure):
        item.close()
    return notebook, saved["view_specs"][0]["model_id"]


def test_saved_state_restores_binary_buffers(panel_notebook):
    notebook, _ = panel_notebook
    models = ws.saved_widget_state(notebook)
    audio = [m["state"] for m in models.values() if m["model_name"] == "AudioModel"]
    assert audio[0]["value"] == AUDIO
    assert ws.saved_widget_state(new_notebook()) == {}


def test_view_figures_are_the_figures_the_panels_last_drew(panel_notebook):
    notebook, view = panel_notebook
    (figure,) = ws.view_figures(ws.saved_widget_state(notebook), view)
    np.testing.assert_array_equal(decode_plotly_arrays(figure["data"][0]["y"]), WAVEFORM)
    assert figure["data"][0]["name"] == "waveform" and "template" in figure["layout"]


def test_view_html_shows_controls_media_and_the_figure(panel_notebook):
    notebook, view = panel_notebook
    page = ws.view_html(ws.saved_widget_state(notebook), view)
    assert "noise: <b>white</b>" in page  # a dropdown shows its chosen label
    assert "SNR &lt;dB&gt;: <b>3.0</b>" in page  # descriptions are escaped
    assert "<i>status line</i>" in page  # HTML widgets keep their markup
    assert f'src="data:audio/wav;base64,{base64.b64encode(AUDIO).decode()}"' in page
    assert page.count("Plotly.newPlot(") == 1
    assert page.index("noise:") < page.index("status line") < page.index("Plotly.newPlot(")  # the box's order
    assert "flex-direction:column" in page and "flex-flow:row" in page  # VBox column, HBox row


def test_snapshot_replaces_widget_views_and_keeps_the_original(panel_notebook):
    notebook, _ = panel_notebook
    snapshot = ws.snapshot_widget_views(notebook)
    data = snapshot.cells[0].outputs[0].data
    assert ws.WIDGET_VIEW_MIMETYPE not in data and data["text/plain"] == "VBox(...)"
    assert "Plotly.newPlot(" in data["text/html"] and ws.CAPTION in data["text/html"]
    assert ws.WIDGET_VIEW_MIMETYPE in notebook.cells[0].outputs[0].data  # the input is left alone


def test_unknown_or_missing_models_are_named():
    models = {"a": {"model_name": "ColorPickerThingModel", "state": {}}}
    assert "[ColorPickerThingModel]" in ws.view_html(models, "a")
    assert "[widget gone not saved]" in ws.view_html(models, "gone")
    assert ws.view_figures(models, "gone") == []
