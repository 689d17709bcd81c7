"""Figures read at a glance (issue 19): whole-number ticks for steps and units, heatmap controls
that do not overlap, layer colours instead of a legend entry per matrix, round energy ticks, the
never-pruned front-end as its own bar, no legend entry for a structure removed everywhere, and
latency with its spread."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdlab.compress.materialise import materialise
from kdlab.compress.structures import attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.viz import curve_figures as cf
from kdlab.viz import gate_figures as gf
from kdlab.viz import rank_figures as rf
from kdlab.viz import training_figures as tf
from kdlab.viz.axes import EVERY_TICK_SPAN, integer_axis
from kdlab.viz.compression_panels import latency_text


def _history(steps: range, layers: int = 3) -> list[dict]:
    return [
        {
            "step": s,
            "kind": "record",
            "loss": 1.0 / (s + 1),
            "target_sparsity": s / 10,
            "expected_sparsity": s / 12,
            "gates": {f"blocks.{layer}.attn": [0.9, 0.2] for layer in range(layers)},
            "ranks": {
                f"blocks.{layer}.{m}": 10.0 - s / 2 for layer in range(layers) for m in ("attn.q_proj", "ffn1.linear1")
            },
        }
        for s in steps
    ]


def test_integer_axis_puts_a_tick_on_every_whole_number_over_a_short_span_only():
    assert integer_axis([0, 1, 2, 3, 4]) == {"tickformat": "d", "tick0": 0, "dtick": 1}
    assert integer_axis(range(0, 400, 20)) == {"tickformat": "d"}, "long spans keep plotly's spacing"
    assert "dtick" in integer_axis([0, EVERY_TICK_SPAN]) and "dtick" not in integer_axis([0, EVERY_TICK_SPAN + 1])


def test_step_axes_of_short_runs_have_whole_number_ticks():
    history = _history(range(5))
    figures = [
        cf.sparsity_figure(history),
        cf.loss_figure(history),
        rf.rank_history_figure(history),
        tf.curves_figure({"run": history}, "loss", kind="record"),
    ]
    for figure in figures:
        assert (figure.layout.xaxis.dtick, figure.layout.xaxis.tickformat) == (1, "d"), figure.layout.title.text


def test_gate_heatmap_has_unit_ticks_and_its_step_label_clear_of_the_play_button():
    figure = gf.gate_heatmap_figure(_history(range(5)), "attn")
    assert figure.layout.xaxis.dtick == 1 and figure.layout.xaxis.tick0 == 0, "two heads: ticks 0 and 1, not 0.5"
    slider, buttons = figure.layout.sliders[0], figure.layout.updatemenus[0]
    assert buttons.xanchor == "right" and buttons.x <= slider.x and slider.xanchor == "left", (
        "buttons end where the slider starts"
    )
    assert slider.currentvalue.xanchor == "right", (
        "the step label sits at the slider's right end, away from the buttons"
    )
    assert math.isclose(slider.x + slider.len, 1.0)


def test_rank_history_colours_lines_by_layer_on_one_scale_without_a_legend_per_matrix():
    figure = rf.rank_history_figure(_history(range(5), layers=12))  # 24 matrices
    assert len(figure.data) == 24 and not any(trace.showlegend for trace in figure.data)
    colour = {}
    for trace in figure.data:
        layer = int(trace.name.split(".")[1])
        assert colour.setdefault(layer, trace.line.color) == trace.line.color, "one colour per layer"
        assert set(trace.marker.color) == {layer} and trace.marker.coloraxis == "coloraxis"
    assert len(set(colour.values())) == 12, "every layer its own colour"
    assert figure.layout.coloraxis.colorbar.title.text == "layer"
    assert (figure.layout.coloraxis.cmin, figure.layout.coloraxis.cmax) == (0, 11)


def test_spectrum_energy_axis_has_round_percentage_ticks():
    figure = rf.spectrum_figure(torch.randn(40, 24, generator=torch.Generator().manual_seed(0)), rank=5)
    assert list(figure.layout.yaxis2.tickvals) == rf.ENERGY_TICKS and figure.layout.yaxis2.tickformat == ".0%"


@pytest.fixture(scope="module")
def pruned_pair():
    """A tiny encoder and a materialised copy with the conv branch removed from every block and
    one block's FFN1 at zero units."""
    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    gated = copy.deepcopy(encoder)
    gates = attach_gates(gated)
    for name, gate in gates.gates.items():
        if name.endswith("conv_gate") or name == "blocks.0.ffn1":
            gate.log_alpha.data.fill_(-30.0)
    return encoder, materialise(gated.eval())


def test_remaining_bars_show_the_front_end_as_never_pruned(pruned_pair):
    original, compressed = pruned_pair
    figure = gf.remaining_ratio_figure(original, compressed)
    parameters = next(trace for trace in figure.data if trace.name == "parameters")
    assert parameters.x[-1] == gf.FRONT_END and parameters.y[-1] == 1.0
    assert all(trace.y[-1] is None for trace in figure.data if trace.name != "parameters"), "no NaN: JSON has none"
    front_end = gf.outside_blocks_parameters(original)
    assert front_end == sum(p.numel() for p in original.subsampling.parameters()) > 0
    assert f"front-end ({front_end:,} params) never pruned" in figure.layout.title.text
    blocks = sum(map(gf.block_num_parameters, compressed.blocks)) / sum(map(gf.block_num_parameters, original.blocks))
    assert f"blocks keep {blocks:.1%}" in figure.layout.title.text


def test_a_structure_removed_everywhere_has_no_legend_entry_and_is_named_in_the_title(pruned_pair):
    original, compressed = pruned_pair
    figure = gf.remaining_ratio_figure(original, compressed)
    shown = {trace.name: trace.showlegend for trace in figure.data}
    assert shown == {"heads": True, "FFN1 units": True, "conv channels": False, "FFN2 units": True, "parameters": True}
    assert "removed everywhere: conv channels" in figure.layout.title.text
    ffn1 = next(trace for trace in figure.data if trace.name == "FFN1 units")
    assert ffn1.y[0] == 0 and ffn1.text[0] == "0" and ffn1.text[1] == "", "a bar at 0 is labelled"


def test_latency_shows_its_spread_and_says_when_a_difference_is_noise():
    noisy = latency_text(0.0225, 0.004, 0.0196, 0.003)
    assert "22.5 ms (IQR 4.0) vs dense 19.6 ms (IQR 3.0)" in noisy and "within the timing noise" in noisy
    clear = latency_text(0.010, 0.001, 0.0196, 0.002)
    assert "noise" not in clear
