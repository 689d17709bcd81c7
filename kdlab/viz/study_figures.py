"""Figures of a study (plotly), drawn from the summary rows (``study.table.summarise``); the
offline page holding them all is ``report.study_figures_page``.

* ``pareto_figures(summary)``: per mode, test WER against encoder parameters, one labelled
  point per row and the Pareto front (``viz.curve_figures.pareto_figure``).
* ``rwer_figure(summary)``: RWER vs the KD baseline of the row's own route per method, one bar
  group per (mode, route),
  error bars = the std over seeds (when there are several).
"""

from __future__ import annotations

import plotly.graph_objects as go

from kdlab.study.checks import is_kd_baseline
from kdlab.study.plan import REFERENCE
from kdlab.viz.curve_figures import pareto_figure


def row_label(row: dict) -> str:
    """ "teacher", "scratch", "<route> KD baseline" or "<route> <method>"."""
    if row["route"] == REFERENCE:
        return row["method"]
    if is_kd_baseline(row):
        return f"{row['route']} KD baseline"
    return f"{row['route']} {row['method']}"


def pareto_figures(summary: list[dict]) -> dict[str, go.Figure]:
    """{mode: Pareto figure of that mode's rows (x: encoder params, y: mean test WER)}."""
    figures = {}
    for mode in dict.fromkeys(r["mode"] for r in summary):
        points = [
            {"label": row_label(r), "encoder_params": r["encoder_params"], "test_wer": r["test_wer"]}
            for r in summary
            if r["mode"] == mode
        ]
        figures[mode] = pareto_figure(
            points, x="encoder_params", y="test_wer", label="label", title=f"{mode}: test WER vs encoder parameters"
        )
    return figures


def rwer_figure(summary: list[dict]) -> go.Figure:
    """Grouped bars of mean RWER (%) per method, one trace per (mode, route); the x label carries
    the target sparsity when the study has several."""
    rows = [r for r in summary if r["rwer"] is not None]
    if not rows:
        raise ValueError("no row has an RWER (every KD baseline WER is 0, or the grid has no baseline)")
    several = len({r["target_sparsity"] for r in rows}) > 1
    figure = go.Figure()
    for mode, route in dict.fromkeys((r["mode"], r["route"]) for r in rows):
        mine = [r for r in rows if (r["mode"], r["route"]) == (mode, route)]
        x = [f"{r['method']} @ {r['target_sparsity']:g}" if several else r["method"] for r in mine]
        errors = [r["rwer_std"] or 0.0 for r in mine]
        figure.add_trace(
            go.Bar(
                x=x,
                y=[r["rwer"] for r in mine],
                name=f"{mode} · {route}",
                error_y={"type": "data", "array": errors, "visible": any(errors)},
            )
        )
    figure.update_layout(
        title="Relative WER vs the KD baseline (positive = better than KD)",
        barmode="group",
        xaxis_title="method",
        yaxis_title="RWER vs the route's KD baseline (%)",
        height=420,
        margin={"t": 50, "b": 40},
    )
    return figure
