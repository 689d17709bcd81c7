"""A panel's figure as a reloading page receives it (the widget state) equals what the panel shows.

A browser reload or a reopened notebook builds the figure from the widget's saved state, and the
HTML reports draw panels from it; in-place edits alone never reach that state (issue 19: the rank
panel's figure showed the rank it was built with after a reload).
"""

from __future__ import annotations

import copy

import numpy as np
import plotly.graph_objects as go
import torch

from kdlab.compress.structures import attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.viz import hardconcrete_figure as hf
from kdlab.viz import rank_figures as rf
from kdlab.viz.compression_panels import HardConcretePanel, RankPanel, SparsityPanel
from kdlab.viz.figure_widget_state import live_update

SHORT_BATCH = (torch.randn(1, 40, 80, generator=torch.Generator().manual_seed(9)), torch.tensor([40]))


def _saved(figure: go.FigureWidget) -> tuple[list[dict], dict]:
    """(traces, layout) of the widget state a page loading the figure receives, arrays decoded."""
    state = figure.get_state(["_widget_data", "_widget_layout"])

    def decode(value):
        if isinstance(value, dict) and "buffer" in value and "dtype" in value:
            return np.frombuffer(value["buffer"], dtype=value["dtype"]).reshape(value["shape"])
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return value

    return [decode(trace) for trace in state["_widget_data"]], decode(state["_widget_layout"])


def test_live_update_stores_the_edited_traces_and_layout_as_the_widget_state():
    figure = go.FigureWidget(go.Figure(go.Scatter(x=[1, 2], y=[3.0, 4.0])))
    with live_update(figure):
        figure.data[0].y = np.array([5.0, 6.0])
        figure.layout.title.text = "moved"
    traces, layout = _saved(figure)
    assert list(traces[0]["y"]) == [5.0, 6.0] and layout["title"]["text"] == "moved"
    figure.data[0].y = np.array([7.0, 8.0])  # a plain edit (the failure live_update guards against)
    assert list(_saved(figure)[0][0]["y"]) == [5.0, 6.0]


def test_rank_panel_state_follows_the_slider_and_the_matrix():
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    panel = RankPanel(encoder, "blocks.0.ffn1.linear1", rank=15)
    panel.rank.value = 7
    traces, layout = _saved(panel.figure)
    assert list(traces[rf.CHOSEN]["x"]) == [7, 7] and traces[rf.CHOSEN]["name"] == "rank 7"
    panel.matrix.value = "blocks.1.attn.out_proj"
    traces, layout = _saved(panel.figure)
    assert np.allclose(traces[rf.SPECTRUM]["y"], np.asarray(panel.figure.data[rf.SPECTRUM].y))
    assert (
        list(traces[rf.CHOSEN]["x"]) == [panel.rank.value] * 2 and layout["title"]["text"] == "blocks.1.attn.out_proj"
    )


def test_sparsity_and_hard_concrete_panel_states_follow_their_sliders():
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    sparsity = SparsityPanel(
        encoder, scores=_scores(encoder), dev_batch=SHORT_BATCH, sparsity=0.1, latency_min_time_s=0.01
    )
    sparsity.slider.value = 0.5
    traces, layout = _saved(sparsity.figure)
    for saved, shown in zip(traces, sparsity.figure.data):
        assert np.allclose(np.asarray(saved["y"], dtype=float), np.asarray(shown.y, dtype=float), equal_nan=True)
    assert layout["title"]["text"] == sparsity.figure.layout.title.text
    gate = HardConcretePanel(log_alpha=0.0, num_samples=2000, bins=10)
    gate.log_alpha.value = 2.5
    traces, _ = _saved(gate.figure)
    assert np.allclose(traces[hf.CLOSED_ATOMS]["y"], [gate.values.prob_zero, gate.values.prob_one])


def _scores(encoder: ConformerEncoder) -> dict[str, torch.Tensor]:
    """Random unit scores for every gate the encoder would get (it stays ungated)."""
    gates = attach_gates(copy.deepcopy(encoder)).gates
    generator = torch.Generator().manual_seed(3)
    return {name: torch.rand(gate.n, generator=generator) for name, gate in gates.items()}


def test_rerunning_a_cell_closes_the_panels_its_earlier_run_made(monkeypatch):
    import ipywidgets as widgets

    from kdlab.viz import cell_panels

    monkeypatch.setattr(cell_panels, "_LIVE", {})

    def panel():
        figure = go.FigureWidget(go.Figure(go.Bar(y=[1, 2])))
        return widgets.VBox([widgets.HBox([widgets.IntSlider()]), figure]), figure

    first, first_figure = panel()
    second, _ = panel()
    other, _ = panel()
    cell_panels.replace_earlier_panels(first, lambda: ("cell-a", 1))
    cell_panels.replace_earlier_panels(second, lambda: ("cell-a", 1))  # two panels from one run both stay
    cell_panels.replace_earlier_panels(other, lambda: ("cell-b", 2))
    assert all(w.comm is not None for w in (first, second, other))
    rerun, _ = panel()
    cell_panels.replace_earlier_panels(rerun, lambda: ("cell-a", 3))
    inner_slider = first.children[0].children[0]
    assert first.comm is None and second.comm is None and first_figure.comm is None and inner_slider.comm is None
    assert rerun.comm is not None and other.comm is not None, "only the re-run cell's earlier panels close"
    headless, _ = panel()
    cell_panels.replace_earlier_panels(headless, lambda: None)  # papermill: no cell id, nothing closes
    assert rerun.comm is not None and headless.comm is not None
