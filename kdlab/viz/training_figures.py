"""Figures of training runs: metric curves from a history, BEST-RQ targets over a spectrogram,
WER bars. Every builder plots its data as given (no smoothing), so a figure can be checked
against the numbers it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdlab.train.history import History
from kdlab.viz.axes import whole_number_x

FRAMES_PER_SECOND = 100.0  # log-mel frames at a 10 ms hop


def _history(history: History | Sequence[dict]) -> History:
    return history if isinstance(history, History) else History(list(history))


def curves_figure(
    histories: Mapping[str, History | Sequence[dict]],
    key: str,
    kind: str = "train",
    title: str = "",
    yaxis_title: str | None = None,
) -> go.Figure:
    """One line per run: `key` of the `kind` records ("train" or "eval") against the step.

    ``histories`` maps a run label to its ``History`` (or its list of records); a run without
    any such value raises ValueError naming it and the keys it has.
    """
    figure = go.Figure()
    for label, history in histories.items():
        steps, values = _history(history).series(kind, key)
        if not steps:
            keys = sorted({k for r in _history(history).of(kind) for k in r} - {"kind", "step"})
            raise ValueError(f"run {label!r} has no {kind!r} records with {key!r}; it has {keys}")
        figure.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers" if kind == "eval" else "lines", name=label))
    figure.update_layout(
        title=title or f"{key} ({kind})",
        xaxis_title="step",
        yaxis_title=yaxis_title or key,
        height=320,
        margin={"t": 40, "b": 40},
    )
    return whole_number_x(figure)


def targets_figure(
    fbank, codes, title: str = "", frames_per_second: float = FRAMES_PER_SECOND, stack: int = 4
) -> go.Figure:
    """Log-mel spectrogram `fbank (T, n_mels)` above the BEST-RQ code ids `codes (T // stack,)`.

    Code j labels input frames j·stack .. j·stack + stack - 1, so its cell spans them on the
    shared time axis (x0 = 0, dx = stack / frames_per_second).
    """
    fbank = np.asarray(getattr(fbank, "detach", lambda: fbank)(), dtype=np.float32)
    codes = np.asarray(getattr(codes, "detach", lambda: codes)()).reshape(-1)
    if fbank.ndim != 2:
        raise ValueError(f"fbank must be (frames, n_mels), got shape {fbank.shape}")
    if len(codes) != fbank.shape[0] // stack:
        raise ValueError(
            f"expected {fbank.shape[0] // stack} codes for {fbank.shape[0]} frames (stack {stack}), got {len(codes)}"
        )
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2], vertical_spacing=0.04)
    figure.add_trace(
        go.Heatmap(
            z=fbank.T, x0=0.0, dx=1.0 / frames_per_second, colorscale="Viridis", showscale=False, name="log-mel"
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Heatmap(
            z=codes[None, :],
            x0=0.0,
            dx=stack / frames_per_second,
            colorscale="Turbo",
            text=codes[None, :].astype(str),
            hovertemplate="t=%{x:.2f}s code %{text}",
            showscale=False,
            name="code id",
        ),
        row=2,
        col=1,
    )
    figure.update_yaxes(title_text="mel bin", row=1, col=1)
    figure.update_yaxes(title_text="code", showticklabels=False, row=2, col=1)
    figure.update_xaxes(title_text="time (s)", row=2, col=1)
    code_ms = round(1000 * stack / frames_per_second)
    figure.update_layout(
        title=title or f"BEST-RQ targets: one code per {code_ms} ms", height=380, margin={"t": 40, "b": 40}
    )
    return figure


def wer_bars_figure(results: Mapping[str, float], title: str = "word error rate", percent: bool = True) -> go.Figure:
    """One bar per system: ``results`` maps a label to a WER fraction (shown in % when `percent`)."""
    if not results:
        raise ValueError("wer_bars_figure needs at least one result")
    scale = 100.0 if percent else 1.0
    values = [float(v) * scale for v in results.values()]
    figure = go.Figure(go.Bar(x=list(results), y=values, text=[f"{v:.1f}" for v in values], textposition="outside"))
    figure.update_layout(
        title=title, yaxis_title="WER (%)" if percent else "WER", height=320, margin={"t": 40, "b": 40}
    )
    return figure
