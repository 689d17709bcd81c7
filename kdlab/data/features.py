"""Log-mel filterbank features and global mean/variance normalisation (CMVN).

`compute_fbank` uses `torchaudio.transforms.MelSpectrogram` (n_fft = window length, Hann
window, power spectrum, natural log): faster on a CPU than `torchaudio.compliance.kaldi.fbank`
for the same 25 ms / 10 ms / 80-bin setting (docs/cpu_timings.md).
Frames are centred with zero padding, so a waveform of T samples gives T // hop + 1 frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torchaudio


@dataclass(frozen=True)
class FbankConfig:
    """Log-mel settings: 80 bins, 25 ms Hann window, 10 ms hop, 16 kHz input."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 20.0
    f_max: float | None = None
    log_floor: float = 1e-10

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_mels <= 0:
            raise ValueError(f"sample_rate and n_mels must be positive, got {self.sample_rate} and {self.n_mels}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise ValueError(f"need 0 < hop_ms <= win_ms, got hop_ms={self.hop_ms}, win_ms={self.win_ms}")

    @property
    def win_length(self) -> int:
        """Window length in samples (400 at 16 kHz)."""
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        """Hop in samples (160 at 16 kHz)."""
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def frames_per_second(self) -> float:
        return 1000.0 / self.hop_ms

    def num_frames(self, num_samples: int) -> int:
        """Frames `compute_fbank` returns for a waveform of `num_samples` samples."""
        return num_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FbankConfig:
        return cls(**data)


@lru_cache(maxsize=8)
def _mel_transform(config: FbankConfig, device: torch.device) -> torchaudio.transforms.MelSpectrogram:
    """One transform (window + mel matrix) per config and device, built once."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.win_length,
        win_length=config.win_length,
        hop_length=config.hop_length,
        f_min=config.f_min,
        f_max=config.f_max,
        n_mels=config.n_mels,
        power=2.0,
        center=True,
        pad_mode="constant",
    ).to(device)


def compute_fbank(wave: torch.Tensor, config: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Log-mel features of a waveform.

    wave: `(T,)` float samples in [-1, 1] at `config.sample_rate` (leading batch dims allowed).
    Returns `(frames, n_mels)` float32 with frames = T // hop + 1 (`(..., frames, n_mels)` for batches).
    """
    if wave.dim() < 1 or wave.shape[-1] == 0:
        raise ValueError(f"compute_fbank needs a non-empty waveform (T,), got shape {tuple(wave.shape)}")
    with torch.no_grad():
        mel = _mel_transform(config, wave.device)(wave.float())
        return mel.clamp_min(config.log_floor).log().transpose(-1, -2).contiguous()


class GlobalCMVN:
    """Per-bin mean / standard deviation of the training features; `__call__` normalises.

    mean, std: `(n_mels,)` float32. Statistics accumulate in float64 over all frames.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_frames: int = 0):
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must both be (n_mels,), got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not (std > 0).all():
            raise ValueError("std must be positive in every bin")
        self.mean = mean.float()
        self.std = std.float()
        self.num_frames = num_frames

    @classmethod
    def fit(cls, features: Iterable[torch.Tensor], min_std: float = 1e-5) -> GlobalCMVN:
        """Fit on an iterable of `(T, n_mels)` tensors."""
        total = total_sq = None
        count = 0
        for feats in features:
            feats = feats.detach().double().reshape(-1, feats.shape[-1])
            if total is None:
                total = torch.zeros(feats.shape[1], dtype=torch.float64)
                total_sq = torch.zeros_like(total)
            elif feats.shape[1] != total.shape[0]:
                raise ValueError(f"all features must have {total.shape[0]} bins, got {feats.shape[1]}")
            total += feats.sum(0)
            total_sq += (feats * feats).sum(0)
            count += feats.shape[0]
        if count == 0:
            raise ValueError("CMVN needs at least one feature frame to fit on")
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        return cls(mean, var.sqrt().clamp_min(min_std), count)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """`(..., n_mels)` -> same shape, zero mean and unit variance per bin on the fitting data."""
        return (features - self.mean.to(features.device)) / self.std.to(features.device)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "num_frames": self.num_frames}

    @classmethod
    def from_dict(cls, data: dict) -> GlobalCMVN:
        return cls(torch.tensor(data["mean"]), torch.tensor(data["std"]), int(data.get("num_frames", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> GlobalCMVN:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit_cmvn(utterances: Sequence, max_utterances: int | None = 500, config: FbankConfig = FbankConfig()) -> GlobalCMVN:
    """Fit `GlobalCMVN` on up to `max_utterances` evenly spaced utterances of a train manifest.

    `utterances`: `Utterance` records (anything with `.audio`). Evenly spaced picks cover every
    speaker of a speaker-ordered manifest without randomness. Unreadable audio is skipped;
    ValueError if none is readable.
    """
    n = len(utterances)
    take = n if max_utterances is None else min(n, max_utterances)
    if take <= 0:
        raise ValueError(f"fit_cmvn needs at least one utterance (got {n}, max_utterances={max_utterances})")
    picks = sorted({math.floor(i * n / take) for i in range(take)})

    waves = (_try_load(utterances[i].audio, config.sample_rate) for i in picks)
    feats = (compute_fbank(w, config) for w in waves if w is not None)  # streamed: memory stays flat
    try:
        return GlobalCMVN.fit(feats)
    except ValueError:  # the only failure left: nothing was readable
        raise ValueError(f"fit_cmvn: none of the {len(picks)} picked utterances has readable audio") from None


def _try_load(path: str, sample_rate: int) -> torch.Tensor | None:
    from kdlab.data.audio_io import AudioError, load_audio

    try:
        return load_audio(path, sample_rate)
    except AudioError:
        return None
