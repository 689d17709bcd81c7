"""Figures and tables for looking at a speech corpus: waveforms, log-mel spectrograms,
speakers and durations per split.

Every builder returns data exactly as given (no resampling or smoothing), so what a figure
shows can be checked against the signal it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdlab.data.manifest import Utterance

FRAMES_PER_SECOND = 100.0  # log-mel frames at a 10 ms hop


def _as_numpy(array) -> np.ndarray:
    """numpy float32 copy of a numpy array or a (CPU) torch tensor."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def waveform_trace(wave, sample_rate: int) -> go.Scatter:
    """Line trace of a waveform `(T,)`: y = the samples, x = time in seconds (`x0 = 0`, `dx = 1/sample_rate`)."""
    wave = _as_numpy(wave)
    if wave.ndim != 1:
        raise ValueError(f"waveform must be one channel (T,), got shape {wave.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return go.Scatter(x0=0.0, dx=1.0 / sample_rate, y=wave, mode="lines", line={"width": 1}, name="waveform")


def spectrogram_trace(fbank, frames_per_second: float = FRAMES_PER_SECOND) -> go.Heatmap:
    """Heatmap trace of log-mel features `(frames, n_mels)`: z = fbank transposed (mel bins on y),
    x = frame times in seconds (`x0 = 0`, `dx = 1/frames_per_second`)."""
    fbank = _as_numpy(fbank)
    if fbank.ndim != 2:
        raise ValueError(f"fbank must be (frames, n_mels), got shape {fbank.shape}")
    return go.Heatmap(
        x0=0.0,
        dx=1.0 / frames_per_second,
        z=fbank.T,
        colorscale="Viridis",
        colorbar={"title": {"text": "log power"}},
        name="log-mel",
    )


def waveform_figure(wave, sample_rate: int, title: str = "") -> go.Figure:
    """Waveform `(T,)` at `sample_rate` Hz against time in seconds."""
    figure = go.Figure(waveform_trace(wave, sample_rate))
    figure.update_layout(
        title=title, xaxis_title="time (s)", yaxis_title="amplitude", height=260, margin={"t": 40, "b": 40}
    )
    return figure


def spectrogram_figure(fbank, title: str = "", frames_per_second: float = FRAMES_PER_SECOND) -> go.Figure:
    """Log-mel spectrogram of `fbank (frames, n_mels)`: time on x, mel bin on y."""
    figure = go.Figure(spectrogram_trace(fbank, frames_per_second))
    figure.update_layout(
        title=title, xaxis_title="time (s)", yaxis_title="mel bin", height=300, margin={"t": 40, "b": 40}
    )
    return figure


def speaker_table(splits: Mapping[str, Sequence[Utterance]]) -> pd.DataFrame:
    """One row per (split, speaker): utterances, minutes of audio, mean SNR in dB.

    splits: split name -> utterances (e.g. `{"train": [...], "dev": [...]}`); rows keep the
    split order, speakers sorted within a split. `mean_snr_db` is NaN for clean audio.
    """
    rows = [
        {"split": split, "speaker": u.speaker, "duration": u.duration, "snr": np.nan if u.snr is None else u.snr}
        for split, utterances in splits.items()
        for u in utterances
    ]
    if not rows:
        raise ValueError("speaker_table needs at least one utterance")
    frame = pd.DataFrame(rows)
    frame["split"] = pd.Categorical(frame["split"], categories=list(splits), ordered=True)
    table = frame.groupby(["split", "speaker"], observed=True).agg(
        utterances=("duration", "size"), minutes=("duration", "sum"), mean_snr_db=("snr", "mean")
    )
    table["minutes"] = table["minutes"] / 60.0
    return table.reset_index()


def split_table(splits: Mapping[str, Sequence[Utterance]]) -> pd.DataFrame:
    """One row per split: speakers, utterances, hours and mean utterance length in seconds."""
    speakers = speaker_table(splits)
    table = speakers.groupby("split", observed=True).agg(
        speakers=("speaker", "size"), utterances=("utterances", "sum"), minutes=("minutes", "sum")
    )
    table["hours"] = table.pop("minutes") / 60.0
    table["mean_seconds"] = table["hours"] * 3600.0 / table["utterances"]
    return table


def duration_histogram(splits: Mapping[str, Sequence[Utterance]], title: str = "Utterance durations") -> go.Figure:
    """Overlaid histograms of utterance durations (seconds), one trace per split."""
    figure = go.Figure(
        [
            go.Histogram(x=np.array([u.duration for u in utterances]), name=split, opacity=0.6)
            for split, utterances in splits.items()
        ]
    )
    figure.update_layout(
        title=title,
        barmode="overlay",
        xaxis_title="duration (s)",
        yaxis_title="utterances",
        height=300,
        margin={"t": 40, "b": 40},
    )
    return figure
