"""The corpus' two synthesis engines side by side: how much each speaks per split, and one
sentence said by a voice of each, to hear and see.

`engine_table` reads the per-engine summary `kdlab.data.corpus.build_corpus` writes into
`corpus.json`; `engines_figure` puts the clean waveform (top) and log-mel spectrogram (bottom) of
each voice in its own column, on one time axis, so the engines' timbres compare at a glance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdlab.data.voices import Voice
from kdlab.viz.corpus_figures import spectrogram_trace, waveform_trace

SAMPLE_RATE = 16000


def engine_table(folder: str | Path) -> pd.DataFrame:
    """Rows (split, engine): utterances, hours and speakers, from `<folder>/corpus.json`.
    Empty for a corpus without that summary (imported data)."""
    path = Path(folder) / "corpus.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    engines = info.get("summary", {}).get("engines", {})
    rows = [
        {"split": split, "engine": engine, **values} for split, per in engines.items() for engine, values in per.items()
    ]
    return pd.DataFrame(rows, columns=["split", "engine", "utterances", "hours", "speakers"])


def say_with_each(text: str, voices: Sequence[Voice]) -> list[np.ndarray]:
    """`text` spoken by every voice: clean float32 waveforms (T_i,) at 16 kHz."""
    from kdlab.data.synthesis import synthesize

    return [synthesize(text, voice) for voice in voices]


def engines_figure(waves: Sequence[np.ndarray], names: Sequence[str]) -> go.Figure:
    """One column per waveform `(T_i,)`: its waveform (row 1) and log-mel spectrogram (row 2), titled
    by `names`; all columns share the time axis and the colour scale."""
    import torch
    from plotly.subplots import make_subplots

    from kdlab.data.features import compute_fbank

    if len(waves) != len(names) or not waves:
        raise ValueError(f"need one name per waveform, got {len(waves)} waveforms and {len(names)} names")
    fbanks = [compute_fbank(torch.from_numpy(np.asarray(w, dtype=np.float32))).numpy() for w in waves]
    low, high = min(float(f.min()) for f in fbanks), max(float(f.max()) for f in fbanks)
    figure = make_subplots(
        rows=2,
        cols=len(waves),
        shared_xaxes="all",
        column_titles=list(names),
        row_heights=[0.35, 0.65],
        vertical_spacing=0.06,
        horizontal_spacing=0.04,
    )
    for column, (wave, fbank) in enumerate(zip(waves, fbanks), start=1):
        figure.add_trace(waveform_trace(wave, SAMPLE_RATE), row=1, col=column)
        heatmap = spectrogram_trace(fbank)
        heatmap.update(zmin=low, zmax=high, showscale=column == len(waves), colorbar={"len": 0.6, "y": 0.3})
        figure.add_trace(heatmap, row=2, col=column)
        figure.update_xaxes(title_text="time (s)", row=2, col=column)
    figure.update_yaxes(title_text="amplitude", row=1, col=1)
    figure.update_yaxes(title_text="mel bin", row=2, col=1)
    figure.update_layout(height=440, showlegend=False, margin={"t": 40, "b": 40})
    return figure
