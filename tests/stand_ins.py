"""Small stand-ins shared by the RNN-T and decoding tests."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn


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
