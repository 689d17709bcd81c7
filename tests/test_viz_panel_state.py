"""A panel's figure as a reloading page receives it (the widget state) equals what the panel shows.

A browser reload or a reopened notebook builds the figure from the widget's saved state, and the
HTML reports draw panels from it (issue 19: the rank panel's figure showed the rank it was built
with after a reload). The state is a few kB of plotly JSON, not plotly.js itself: a page loading
5 MB of JavaScript per figure passed the browser side's 2 s limits on a busy machine
("[anywidget] Failed to initialize model.", "widget model not found").
"""

from __future__ import annotations

import copy
import json

import numpy as np
import plotly.graph_objects as go
import torch
from stand_ins import decode_plotly_arrays

from kdlab.compress.structures import attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.viz import hardconcrete_figure as hf
from kdlab.viz import rank_figures as rf
from kdlab.viz.compression_panels import HardConcretePanel, RankPanel, SparsityPanel
from kdlab.viz.figure_pane import PLOTLY_MIMETYPE, FigurePane

SHORT_BATCH = (torch.randn(1, 40, 80, generator=torch.Generator().manual_seed(9)), torch.tensor([40]))
#: The most a small panel figure's widget state may weigh (plotly.js itself is about 5 MB).
SMALL_STATE_BYTES = 100_000


def _saved(pane: FigurePane) -> tuple[list[dict], dict]:
    """(traces, layout) of the widget state a page loading the pane receives, arrays decoded."""
    shown = decode_plotly_arrays(pane.shown())
    return shown["data"], shown["layout"]


def _state_bytes(widget) -> int:
    """Size of the JSON state of `widget` and every widget inside it."""
    children = getattr(widget, "children", ())
    state = widget.get_state()
    own = len(json.dumps({k: v for k, v in state.items() if k != "children"}, default=str))
    return own + sum(_state_bytes(child) for child in children)


def test_editing_redraws_once_at_the_end_and_the_state_is_the_figure():
    pane = FigurePane(go.Figure(go.Scatter(x=[1, 2], y=[3.0, 4.0])))
    with pane.editing() as figure:
        figure.data[0].y = np.array([5.0, 6.0])
        figure.layout.title.text = "moved"
        assert list(_saved(pane)[0][0]["y"]) == [3.0, 4.0], "nothing is drawn before the block ends"
    traces, layout = _saved(pane)
    assert list(traces[0]["y"]) == [5.0, 6.0] and layout["title"]["text"] == "moved"
    assert [o["output_type"] for o in pane.widget.outputs] == ["display_data"]
    assert PLOTLY_MIMETYPE in pane.widget.outputs[0]["data"]


def test_rank_panel_state_follows_the_slider_and_the_matrix():
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    panel = RankPanel(encoder, "blocks.0.ffn1.linear1", rank=15)
    panel.rank.value = 7
    traces, layout = _saved(panel.pane)
    assert list(traces[rf.CHOSEN]["x"]) == [7, 7] and traces[rf.CHOSEN]["name"] == "rank 7"
    panel.matrix.value = "blocks.1.attn.out_proj"
    traces, layout = _saved(panel.pane)
    assert np.allclose(traces[rf.SPECTRUM]["y"], np.asarray(panel.figure.data[rf.SPECTRUM].y))
    assert (
        list(traces[rf.CHOSEN]["x"]) == [panel.rank.value] * 2 and layout["title"]["text"] == "blocks.1.attn.out_proj"
    )
    assert _state_bytes(panel.widget) < SMALL_STATE_BYTES


def test_sparsity_and_hard_concrete_panel_states_follow_their_sliders():
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    sparsity = SparsityPanel(
        encoder, scores=_scores(encoder), dev_batch=SHORT_BATCH, sparsity=0.1, latency_min_time_s=0.01
    )
    sparsity.slider.value = 0.5
    traces, layout = _saved(sparsity.pane)
    for saved, shown in zip(traces, sparsity.figure.data):
        saved_y = [np.nan if v is None else v for v in saved["y"]]
        assert np.allclose(np.asarray(saved_y, dtype=float), np.asarray(shown.y, dtype=float), equal_nan=True)
    assert layout["title"]["text"] == sparsity.figure.layout.title.text
    gate = HardConcretePanel(log_alpha=0.0, num_samples=2000, bins=10)
    gate.log_alpha.value = 2.5
    traces, _ = _saved(gate.pane)
    assert np.allclose(traces[hf.CLOSED_ATOMS]["y"], [gate.values.prob_zero, gate.values.prob_one])
    assert max(_state_bytes(sparsity.widget), _state_bytes(gate.widget)) < SMALL_STATE_BYTES


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
        figure = FigurePane(go.Figure(go.Bar(y=[1, 2]))).widget
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
