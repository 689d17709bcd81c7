"""SpecAugment (Park et al. 2019): frequency and time masks on log-mel features.

Built from `torchaudio.transforms.FrequencyMasking` / `TimeMasking`. Each time mask is at
most `min(time_width, time_ratio * T)` frames wide, so short utterances are not wiped out.
Applied per utterance, after CMVN, so masked cells hold 0 = the training mean.
Identity in `eval()` mode.

Randomness: torchaudio draws from torch's global generator. Pass `seed=` to `forward` to
make one call reproducible without disturbing the caller's generator (the dataset derives
that seed from (seed, epoch, index), so results do not depend on the number of workers);
without it, `torch.manual_seed` by the caller decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import nn

from kdlab.config import JsonConfig


@dataclass
class SpecAugmentConfig(JsonConfig):
    """Mask counts and widths (frames of 10 ms, mel bins)."""

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 40
    time_ratio: float = 0.05

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width) < 0:
            raise ValueError(f"mask counts and widths must be >= 0, got {self}")
        if not 0.0 < self.time_ratio <= 1.0:
            raise ValueError(f"time_ratio must be in (0, 1], got {self.time_ratio}")


class SpecAugment(nn.Module):
    """features `(T, F)` (or `(..., T, F)`, same masks for the leading dims) -> masked copy."""

    def __init__(self, config: SpecAugmentConfig = SpecAugmentConfig()):
        super().__init__()
        self.config = config
        self.freq_mask = torchaudio.transforms.FrequencyMasking(config.freq_width)
        self.time_mask = torchaudio.transforms.TimeMasking(config.time_width, p=config.time_ratio)

    def forward(self, features: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        if not self.training:
            return features
        if seed is None:
            return self._mask(features)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._mask(features)

    def _mask(self, features: torch.Tensor) -> torch.Tensor:
        spec = features.transpose(-1, -2)  # (..., F, T) as torchaudio expects
        for _ in range(self.config.freq_masks):
            spec = self.freq_mask(spec)
        for _ in range(self.config.time_masks):
            spec = self.time_mask(spec)
        return spec.transpose(-1, -2).contiguous()
