"""The hard-concrete distribution, sampled and in closed form, for one gate (log α, β).

With s = (z − γ) / (ζ − γ) and S = σ((L + log α) / β) (L logistic), the distribution function
of the clipped gate z is, for 0 ≤ z < 1,

    F(z) = P(Z ≤ z) = σ(β · logit((z − γ) / (ζ − γ)) − log α),

so the atom at 0 is F(0) = P(z = 0) = 1 − P(z ≠ 0), each interior bin (a, b] holds F(b) − F(a),
and the atom at 1 is P(z = 1) = 1 − F(1⁻). ``hard_concrete_view`` draws samples with
``HardConcreteGate.sample`` (seeded) and puts them beside these closed forms (the atoms from
``kdlab.compress.hardconcrete``); ``hard_concrete_figure`` plots both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from kdlab.compress.hardconcrete import (
    HardConcreteGate,
    hard_concrete_deterministic,
    hard_concrete_prob_nonzero,
    hard_concrete_prob_one,
)

#: Trace order of ``hard_concrete_figure``.
SAMPLED_BINS, SAMPLED_ATOMS, CLOSED_BINS, CLOSED_ATOMS = range(4)


@dataclass(frozen=True)
class HardConcreteView:
    """Sampled and closed-form masses of one gate. Bin arrays are (bins,) over (0, 1) with
    ``edges (bins + 1,)``; ``sampled_*`` are fractions of all ``num_samples`` samples."""

    log_alpha: float
    beta: float
    gamma: float
    zeta: float
    num_samples: int
    edges: np.ndarray
    sampled_bins: np.ndarray
    sampled_zero: float
    sampled_one: float
    closed_bins: np.ndarray
    prob_zero: float
    prob_one: float
    deterministic: float


def hard_concrete_cdf(z: np.ndarray, log_alpha: float, beta: float, gamma: float, zeta: float) -> np.ndarray:
    """F(z) = P(Z ≤ z) for 0 ≤ z ≤ 1 (at z = 1 the limit from below, 1 − P(z = 1)); float64."""
    s = (np.asarray(z, dtype=np.float64) - gamma) / (zeta - gamma)
    x = beta * (np.log(s) - np.log1p(-s)) - log_alpha
    return 1.0 / (1.0 + np.exp(-x))


def hard_concrete_view(
    log_alpha: float,
    beta: float = 2.0 / 3.0,
    gamma: float = -0.1,
    zeta: float = 1.1,
    num_samples: int = 20000,
    bins: int = 20,
    seed: int = 0,
) -> HardConcreteView:
    """Draw ``num_samples`` gate values (seeded) and compute the closed forms (module docstring)."""
    if num_samples < 1 or bins < 1:
        raise ValueError(f"num_samples and bins must be >= 1, got {num_samples} and {bins}")
    if not math.isfinite(log_alpha):
        raise ValueError(f"log_alpha must be a finite number, got {log_alpha}")
    gate = HardConcreteGate(1, beta=beta, gamma=gamma, zeta=zeta, seed=seed).to(torch.float64)
    with torch.no_grad():
        gate.log_alpha.fill_(log_alpha)
        z = gate.sample((num_samples,)).reshape(-1).numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    interior = z[(z > 0.0) & (z < 1.0)]
    alpha = torch.tensor([log_alpha], dtype=torch.float64)
    return HardConcreteView(
        log_alpha=log_alpha,
        beta=beta,
        gamma=gamma,
        zeta=zeta,
        num_samples=num_samples,
        edges=edges,
        sampled_bins=np.histogram(interior, edges)[0] / num_samples,
        sampled_zero=float(np.mean(z == 0.0)),
        sampled_one=float(np.mean(z == 1.0)),
        closed_bins=np.diff(hard_concrete_cdf(edges, log_alpha, beta, gamma, zeta)),
        prob_zero=float(1.0 - hard_concrete_prob_nonzero(alpha, beta, gamma, zeta)),
        prob_one=float(hard_concrete_prob_one(alpha, beta, gamma, zeta)),
        deterministic=float(hard_concrete_deterministic(alpha, gamma, zeta)),
    )


def view_title(view: HardConcreteView) -> str:
    return (
        f"log α = {view.log_alpha:.2f}, β = {view.beta:.2f}: P(z = 0) = {view.prob_zero:.3f}, "
        f"P(z = 1) = {view.prob_one:.3f}, eval mask ẑ = {view.deterministic:.3f}"
    )


def view_traces(view: HardConcreteView) -> list[dict]:
    """Data of the four traces (x, y) in ``hard_concrete_figure`` order."""
    centres = (view.edges[:-1] + view.edges[1:]) / 2
    return [
        {"x": centres, "y": view.sampled_bins},
        {"x": [0.0, 1.0], "y": [view.sampled_zero, view.sampled_one]},
        {"x": centres, "y": view.closed_bins},
        {"x": [0.0, 1.0], "y": [view.prob_zero, view.prob_one]},
    ]


def hard_concrete_figure(
    log_alpha: float,
    beta: float = 2.0 / 3.0,
    gamma: float = -0.1,
    zeta: float = 1.1,
    num_samples: int = 20000,
    bins: int = 20,
    seed: int = 0,
) -> go.Figure:
    """Sampled masses (bars: interior bins, and the exact-0 / exact-1 atoms) against the closed
    form (line per bin, diamonds at P(z = 0) and P(z = 1)); y = probability mass."""
    view = hard_concrete_view(log_alpha, beta, gamma, zeta, num_samples, bins, seed)
    data = view_traces(view)
    width = 1.0 / bins
    figure = go.Figure(
        [
            go.Bar(**data[SAMPLED_BINS], width=width, name="samples, 0 < z < 1", marker={"color": "#7aa6d8"}),
            go.Bar(
                **data[SAMPLED_ATOMS], width=min(width, 0.04), name="samples, z = 0 or 1", marker={"color": "#1f4e8c"}
            ),
            go.Scatter(**data[CLOSED_BINS], mode="lines", name="closed form per bin", line={"color": "#d62728"}),
            go.Scatter(
                **data[CLOSED_ATOMS],
                mode="markers",
                name="closed form P(z=0), P(z=1)",
                marker={"symbol": "diamond", "size": 12, "color": "#d62728"},
            ),
        ]
    )
    figure.update_layout(
        title=view_title(view),
        xaxis_title="z",
        yaxis_title="probability mass",
        xaxis={"range": [-0.06, 1.06]},
        height=340,
        margin={"t": 50, "b": 40},
        bargap=0,
    )
    return figure
