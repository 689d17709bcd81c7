"""Latency vs MACs of materialised encoders: measured against a reference, and drawn (plotly).

    rows = measure_latency_vs_macs({"teacher": teacher.encoder, "l0 0.5": small}, runtime="onnxruntime")
    latency_vs_macs_figure(rows)

Each encoder is timed in rounds interleaved with the first one (the reference, e.g. the dense
teacher), batch 1, so a busy moment hits both; the figure adds the line "latency proportional to
MACs" through the reference, which a model on or below it reaches.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import plotly.graph_objects as go
import torch

from kdlab.compress.param_count import expected_macs_per_second
from kdlab.deploy.encoder_runtime import encoder_call
from kdlab.eval.latency import measure_paired_latency
from kdlab.models.conformer import ConformerEncoder


def measure_latency_vs_macs(
    encoders: dict[str, ConformerEncoder],
    seconds: float = 4.0,
    runtime: str = "onnxruntime",
    rounds: int = 5,
    min_time: float = 0.3,
) -> list[dict]:
    """One row per encoder (the first is the reference): ``name``, ``macs_per_second``,
    ``mac_reduction`` and ``speedup`` (reference ÷ this), ``latency_ms`` and ``reference_latency_ms``
    (batch 1, ``seconds`` of random features, medians over ``rounds`` interleaved rounds)."""
    names = list(encoders)
    first = encoders[names[0]]
    frames = round(100 * seconds) + 3
    features = torch.randn(1, frames, first.config.input_dim, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([frames])
    macs = {name: float(expected_macs_per_second(e, deterministic=True)) for name, e in encoders.items()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        calls = {
            name: encoder_call(e, features, lengths, runtime, Path(folder) / str(i))
            for i, (name, e) in enumerate(encoders.items())
        }
        for name in names:
            paired = measure_paired_latency(calls[name], calls[names[0]], rounds=rounds, min_time_s=min_time)
            rows.append(
                {
                    "name": name,
                    "runtime": runtime,
                    "macs_per_second": macs[name],
                    "mac_reduction": macs[names[0]] / macs[name],
                    "latency_ms": paired.median_s * 1e3,
                    "reference_latency_ms": paired.reference_median_s * 1e3,
                    "speedup": paired.speedup,
                }
            )
    return rows


def latency_vs_macs_figure(rows: list[dict]) -> go.Figure:
    """Latency (ms) against MACs per second of audio (M), one labelled point per row, and the line
    "latency proportional to MACs" through the first row (the reference)."""
    reference = rows[0]
    x = [r["macs_per_second"] / 1e6 for r in rows]
    scale = reference["latency_ms"] / (reference["macs_per_second"] / 1e6)
    figure = go.Figure(
        [
            go.Scatter(
                x=[0, max(x)],
                y=[0, max(x) * scale],
                mode="lines",
                name="latency ∝ MACs",
                line={"dash": "dot", "color": "grey"},
            ),
            go.Scatter(
                x=x,
                y=[r["latency_ms"] for r in rows],
                mode="markers+text",
                name="encoders",
                text=[r["name"] for r in rows],
                textposition="top center",
            ),
        ]
    )
    runtime = reference.get("runtime", "")
    figure.update_layout(
        title=f"Batch-1 encoder latency vs MACs ({runtime})",
        xaxis_title="MACs per second of audio (M)",
        yaxis_title="latency (ms)",
        template="plotly_white",
    )
    return figure
