"""Small stand-ins and helpers shared by several test files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kdlab.paths import data_cache


class StackEncoder(nn.Module):
    """Stand-in encoder with the kdlab contract: stack 4 frames + Linear + tanh, T' = T // 4."""

    def __init__(self, input_dim: int = 80, d_model: int = 16) -> None:
        super().__init__()
        self.config = SimpleNamespace(d_model=d_model)
        self.linear = nn.Linear(4 * input_dim, d_model)

    def forward(self, features, lengths):
        b, t, f = features.shape
        out = torch.tanh(self.linear(features[:, : t // 4 * 4].reshape(b, t // 4, 4 * f)))
        return out, lengths // 4, [out]


@dataclass
class FakeBatch:
    """The fields of `kdlab.data.batching.Batch` that the RNN-T model reads."""

    features: torch.Tensor
    feature_lengths: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor


def isolated_kdlab_home(root: Path, corpus: Path) -> pytest.MonkeyPatch:
    """Point `KDLAB_HOME` at `root` (empty runs/) that shares the tiny `corpus` and its feature cache.

    Returns the MonkeyPatch; call `.undo()` when done.
    """
    (root / "data" / "cache" / "features").mkdir(parents=True)
    os.symlink(corpus, root / "data" / "cache" / corpus.name)
    features = data_cache() / "features" / corpus.name
    features.mkdir(parents=True, exist_ok=True)
    os.symlink(features, root / "data" / "cache" / "features" / corpus.name)
    patch = pytest.MonkeyPatch()
    patch.setenv("KDLAB_HOME", str(root))
    return patch
