"""The per-call latency of chunk-by-chunk decoding (``models.stream_decoding.stream_transcribe``)."""

from __future__ import annotations

import plotly.graph_objects as go

from kdlab.models.stream_decoding import FRAME_SECONDS, StreamTrace


def stream_latency_figure(trace: StreamTrace, feed_frames: int, title: str = "") -> go.Figure:
    """Bars: compute time of each call (ms); line: the audio each call brings (ms), the real-time budget."""
    calls = list(range(1, len(trace.calls) + 1))
    figure = go.Figure(
        [
            go.Bar(
                x=calls,
                y=[c.compute_ms for c in trace.calls],
                name="compute (encoder + greedy search)",
                text=[f"{c.frames} fr" for c in trace.calls],
                textposition="outside",
            ),
            go.Scatter(
                x=calls,
                y=[feed_frames * FRAME_SECONDS * 1e3] * len(calls),
                mode="lines",
                line={"dash": "dash", "color": "red"},
                name="audio per call (real-time budget)",
            ),
        ]
    )
    figure.update_layout(
        title=title or "Per-call latency of chunk-by-chunk decoding",
        xaxis_title="call",
        yaxis_title="ms",
        height=340,
        margin={"t": 50, "b": 40},
    )
    return figure
