"""Low-rank factorisation figures: singular-value spectra and the ranks chosen during training.

* ``spectrum_figure(weight)``: the singular values σ_i of a weight (m × n) against i = 1 … min(m, n),
  the cumulative energy Σ_{j ≤ i} σ_j² / Σ σ² on a second axis, a vertical marker at the
  break-even rank (the largest r with r·(m + n) < m·n, ``break_even_rank``) and, optionally, one
  at a chosen rank.
* ``rank_history_figure(history)``: one line per matrix of the recorded expected rank over
  training steps (history key ``"ranks"``, see ``kdlab.viz.compression_history``), coloured by layer.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from kdlab.compress.lowrank import break_even_rank, singular_values
from kdlab.viz.axes import integer_axis, whole_number_x
from kdlab.viz.compression_history import as_records, is_number, mapping_history, split_gate_name

#: Trace order of ``spectrum_figure``.
SPECTRUM, ENERGY, BREAK_EVEN, CHOSEN = range(4)
#: ``rank_history_figure``: the colour scale of the layers, and the colour of matrices outside the blocks.
LAYER_SCALE = "Viridis"
OUTSIDE_BLOCKS_COLOUR = "gray"
#: The energy axis of ``spectrum_figure``: round ticks, as percentages.
ENERGY_TICKS = [0.0, 0.25, 0.5, 0.75, 1.0]


def cumulative_energy(values: torch.Tensor) -> torch.Tensor:
    """(k,) float64 Σ_{j ≤ i} σ_j² / Σ σ² of descending singular values ``values (k,)`` (zeros if all are 0)."""
    power = values.detach().to(torch.float64).square()
    total = power.sum()
    return power.cumsum(0) / total if total > 0 else torch.zeros_like(power)


def spectrum_figure(weight: torch.Tensor, rank: int | None = None, title: str = "") -> go.Figure:
    """Spectrum of ``weight (m, n)`` with energy, break-even and (optional) chosen-rank markers.

    Traces: 0 singular values (x = 1 … k, y = σ, float64 ``torch.linalg.svdvals``), 1 cumulative
    energy (second y axis, 0 … 1), 2 the break-even marker (x = [r_be, r_be], y = [0, 1] on the
    energy axis), 3 the chosen rank (same form; at ``rank``, hidden when ``rank`` is None).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D matrix (m, n), got shape {tuple(weight.shape)}")
    m, n = weight.shape
    values = singular_values(weight)
    energy = cumulative_energy(values)
    components = list(range(1, values.numel() + 1))
    limit = break_even_rank(m, n)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Scatter(x=components, y=values.numpy(), mode="lines+markers", marker={"size": 3}, name="singular value σᵢ"),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(x=components, y=energy.numpy(), mode="lines", name="cumulative energy"), secondary_y=True
    )
    figure.add_trace(
        go.Scatter(
            x=[limit, limit],
            y=[0.0, 1.0],
            mode="lines",
            line={"dash": "dash", "color": "red"},
            name=f"break-even r = {limit} (r·(m+n) < m·n)",
        ),
        secondary_y=True,
    )
    figure.add_trace(
        go.Scatter(
            x=[rank or 0, rank or 0],
            y=[0.0, 1.0],
            mode="lines",
            visible=rank is not None,
            line={"color": "black"},
            name=f"rank {rank}",
        ),
        secondary_y=True,
    )
    figure.update_layout(
        title=title or f"Spectrum of a {m} × {n} weight",
        height=340,
        margin={"t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    figure.update_xaxes(title_text="component i", **integer_axis(components))
    figure.update_yaxes(title_text="σᵢ", secondary_y=False)
    figure.update_yaxes(
        title_text="energy kept",
        range=[0, 1.02],
        tickmode="array",
        tickvals=ENERGY_TICKS,
        tickformat=".0%",
        showgrid=False,
        secondary_y=True,
    )
    return figure


def rank_history_figure(history, names: list[str] | None = None, title: str = "Expected rank per matrix") -> go.Figure:
    """One line per matrix (all recorded, or ``names``): x = step, y = recorded expected rank.

    A line's colour is its block's layer on one colour scale (a colour bar, not a legend entry
    per matrix: an encoder has dozens); the matrix name shows on hover. Matrices outside the
    blocks are grey. Records whose ``"ranks"`` lack a matrix (or hold a non-finite value) leave a
    gap for it.
    """
    steps, rank_dicts = mapping_history(as_records(history), "ranks")
    if not rank_dicts:
        raise ValueError("the history has no 'ranks' records: log each low-rank layer's expected rank")
    recorded = list(dict.fromkeys(name for ranks in rank_dicts for name in ranks))
    missing = sorted(set(names or []) - set(recorded))
    if missing:
        more = " ..." if len(recorded) > 8 else ""
        raise ValueError(f"no rank recorded for {missing}; recorded matrices: {recorded[:8]}{more}")
    chosen = names or recorded
    layers = {name: split_gate_name(name)[0] for name in chosen}
    numbered = sorted({layer for layer in layers.values() if layer is not None}) or [0]
    low, high = numbered[0], max(numbered[-1], numbered[0] + 1)
    figure = go.Figure()
    for name in chosen:
        points = [(s, float(r[name])) for s, r in zip(steps, rank_dicts) if is_number(r.get(name))]
        layer = layers[name]
        if layer is None:
            colour, marker = OUTSIDE_BLOCKS_COLOUR, {"color": OUTSIDE_BLOCKS_COLOUR}
        else:
            colour = sample_colorscale(LAYER_SCALE, [(layer - low) / (high - low)])[0]
            marker = {"color": [layer] * len(points), "coloraxis": "coloraxis"}
        figure.add_trace(
            go.Scatter(
                x=[s for s, _ in points],
                y=[v for _, v in points],
                mode="lines+markers",
                name=name,
                showlegend=False,
                line={"color": colour, "width": 1.5},
                marker={**marker, "size": 4},
                hovertemplate=f"{name}<br>step %{{x}}: expected rank %{{y:.1f}}<extra></extra>",
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="expected rank",
        height=340,
        margin={"t": 50, "b": 40},
        coloraxis={
            "colorscale": LAYER_SCALE,
            "cmin": low,
            "cmax": high,
            "colorbar": {"title": {"text": "layer"}, **integer_axis(numbered)},
        },
    )
    return whole_number_x(figure)
