"""Half-rate middle blocks: a temporal U-Net inside the conformer (the idea of Squeezeformer).

``ConformerConfig.half_rate_blocks = [a, b]`` runs blocks a .. b-1 on frames of twice the
period (80 ms at 4x subsampling), which roughly halves their cost, while the encoder's input and
output keep the front-end's frame rate (so CTC still has one frame per 40 ms for characters):

    x (B, T, D) --blocks 0..a-1--> s --PairDownsample--> (B, ceil(T/2), D) --blocks a..b-1--> m
    upsample(m, s) = repeat each frame of m twice, crop to T, + s --blocks b..N-1--> (B, T, D)

Frame k of the half-rate sequence reads frames 2k and 2k + 1 (an odd last frame is paired with
zeros, and so is a padded frame), so a chunk of an even number of frames maps to its own half-rate
chunk: streaming stays exact and adds no latency (chunk_size must be even).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def half_rate_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """(B,) frame counts -> (B,) half-rate frame counts, ceil(T / 2)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class PairDownsample(nn.Module):
    """(B, T, D) -> (B, ceil(T/2), D): each pair of frames (2k, 2k + 1), concatenated, projected to D.

    Initialised to the pair's mean (weight [I/2, I/2], zero bias), so an untrained U-Net starts
    from averaged pairs; the gradient separates the two halves.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * d_model, d_model)
        with torch.no_grad():
            self.linear.weight.copy_(0.5 * torch.eye(d_model).repeat(1, 2))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), pad_mask (B, T, 1) True at padding (zeroed first) -> (B, ceil(T/2), D)."""
        if pad_mask is not None:
            x = x.masked_fill(pad_mask, 0.0)
        b, t, d = x.shape
        pairs = (t + 1) // 2
        x = F.pad(x, (0, 0, 0, 1))[:, : 2 * pairs]  # one zero frame, kept only for an odd length (no branch: traceable)
        return self.linear(x.reshape(b, pairs, 2 * d))


def upsample(half: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """half (B, ceil(T/2), D), skip (B, T, D) -> (B, T, D): each half-rate frame twice, plus the skip."""
    return repeat_to_full_rate(half, skip.shape[1]) + skip


def repeat_to_full_rate(half: torch.Tensor, frames: int) -> torch.Tensor:
    """half (B, ceil(T/2), D) -> (B, T, D), each frame repeated (a half-rate block's hidden state
    at the encoder's frame rate, so every ``hidden_states`` entry has the same shape)."""
    return half.repeat_interleave(2, dim=1)[:, :frames]
