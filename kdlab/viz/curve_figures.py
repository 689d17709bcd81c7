"""Training curves and the final comparison of a compression study.

* ``sparsity_figure(history)``: target t(step) and expected ŝ(step) sparsity, with the Lagrange
  multipliers λ1, λ2 on a second axis — is ŝ tracking t?
* ``loss_figure(history)``: every loss part over the steps (one line per key and record kind).
* ``pareto_figure(results)``: WER against parameters, one labelled point per result, and the
  Pareto front (the results no other result beats on both).

History shape: see ``kdlab.viz.compression_history``. Points are plotted exactly as recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdlab.viz.axes import whole_number_x
from kdlab.viz.compression_history import as_records, is_number, loss_keys, series

SPARSITY_KEYS = ("target_sparsity", "expected_sparsity")
LAMBDA_KEYS = ("lambda1", "lambda2")


def sparsity_figure(history, title: str = "Target vs expected sparsity") -> go.Figure:
    """Lines of ``target_sparsity`` and ``expected_sparsity`` (left axis) and ``lambda1``,
    ``lambda2`` (right axis, dotted) against step; a key absent from every record has no trace.
    Traces are named by their key."""
    records = as_records(history)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for key in SPARSITY_KEYS + LAMBDA_KEYS:
        steps, values = series(records, key)
        if not steps:
            continue
        is_lambda = key in LAMBDA_KEYS
        line = {"dash": "dot"} if is_lambda else ({"dash": "dash"} if key == "target_sparsity" else {})
        figure.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=key, line=line), secondary_y=is_lambda)
    if not figure.data:
        raise ValueError(f"the history has none of {SPARSITY_KEYS + LAMBDA_KEYS}: is it from an L0 run?")
    figure.update_layout(title=title, height=340, margin={"t": 50, "b": 40})
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text="sparsity", secondary_y=False)
    figure.update_yaxes(title_text="λ", secondary_y=True)
    return whole_number_x(figure)


def loss_figure(history, keys: Sequence[str] | None = None, log_y: bool = False, title: str = "Losses") -> go.Figure:
    """One line per (loss key, record kind) over the steps: ``keys`` (default: every numeric key
    whose name contains "loss"). Trace names are the key, with " (kind)" when the key appears
    under several record kinds (e.g. train and eval)."""
    records = as_records(history)
    keys = list(keys) if keys is not None else loss_keys(records)
    if not keys:
        raise ValueError("the history has no loss values (numeric keys containing 'loss'); pass keys=[...]")
    figure = go.Figure()
    for key in keys:
        kinds = list(dict.fromkeys(r.get("kind") for r in records if is_number(r.get(key))))
        if not kinds:
            raise ValueError(f"no record has a numeric {key!r}; loss keys found: {loss_keys(records)}")
        for kind in kinds:
            steps, values = zip(
                *[(r["step"], r[key]) for r in records if r.get("kind") == kind and is_number(r.get(key))]
            )
            name = key if len(kinds) == 1 or kind is None else f"{key} ({kind})"
            figure.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name=name))
    figure.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="loss",
        yaxis_type="log" if log_y else None,
        height=340,
        margin={"t": 50, "b": 40},
    )
    return whole_number_x(figure)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (x, y) not dominated by another (x' ≤ x and y' ≤ y, one strictly),
    sorted by x (lower is better on both axes)."""
    front = [
        i for i, (x, y) in enumerate(points) if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i])


def pareto_figure(
    results: Sequence[Mapping],
    x: str = "params",
    y: str = "wer",
    label: str = "method",
    title: str = "WER vs parameters",
) -> go.Figure:
    """Scatter of ``results`` (dicts like ``{"method", "params", "wer", ...}``): one trace per
    ``label`` value (text = the label, x/y = the ``x``/``y`` keys), then a "Pareto front" line
    through the non-dominated points. Results without a numeric ``x`` or ``y`` are left out and
    counted in the title."""
    usable = [r for r in results if is_number(r.get(x)) and is_number(r.get(y))]
    if not usable:
        raise ValueError(f"no result has numeric {x!r} and {y!r}; got {len(results)} results")
    figure = go.Figure()
    for name in dict.fromkeys(str(r.get(label, "?")) for r in usable):
        mine = [r for r in usable if str(r.get(label, "?")) == name]
        figure.add_trace(
            go.Scatter(
                x=[r[x] for r in mine],
                y=[r[y] for r in mine],
                mode="markers+text",
                name=name,
                text=[name] * len(mine),
                textposition="top center",
                marker={"size": 10},
            )
        )
    points = [(float(r[x]), float(r[y])) for r in usable]
    front = pareto_front(points)
    figure.add_trace(
        go.Scatter(
            x=[points[i][0] for i in front],
            y=[points[i][1] for i in front],
            mode="lines",
            line={"dash": "dash", "color": "gray"},
            name="Pareto front",
        )
    )
    left_out = len(results) - len(usable)
    note = f" ({left_out} result{'s' * (left_out != 1)} without {x}/{y} not shown)" if left_out else ""
    figure.update_layout(title=title + note, xaxis_title=x, yaxis_title=y, height=380, margin={"t": 50, "b": 40})
    return figure
