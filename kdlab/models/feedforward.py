"""Macaron feed-forward branch of a conformer block.

LayerNorm -> Linear(D, ffn_dim) -> SiLU -> dropout -> [gate] -> Linear(ffn_dim, D) -> dropout.
The block adds it with a half-step residual (x + 0.5 * ffn(x)).

Prunable place: ``gate`` (default ``None``). When set, it is an ``nn.Module`` whose
``forward()`` returns an ``(ffn_dim,)`` mask multiplied into the activations after
SiLU. A zero entry equals removing intermediate unit ``j`` (row ``j`` of ``linear1``,
column ``j`` of ``linear2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """(B, T, D) -> (B, T, D) position-wise feed-forward branch (no residual)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.gate: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.silu(self.linear1(self.norm(x))))
        if self.gate is not None:
            h = h * self.gate()
        return self.dropout(self.linear2(h))
