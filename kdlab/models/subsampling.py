"""Conv2d 4x time subsampling front-end of the conformer encoder.

Two 3x3 convolutions with stride 2 and no padding (each followed by ReLU) shrink
time and frequency by about 4; a linear map takes the flattened channels x
frequency bins to ``d_model``.

Receptive field and streaming. Output frame ``j`` reads input frames
``4j .. 4j+6`` and nothing else (7 frames, stride 4), so an utterance of ``T``
frames gives ``(T - 3) // 4`` output frames (``((T - 1) // 2 - 1) // 2``, exact).
Because there is no padding, the front-end is causal up to a look-ahead of 3
input frames (30 ms) inside its own 7-frame window: a streaming caller keeps the
unconsumed tail of the input (at most 6 frames) and computes exactly the frames
the full-sequence forward computes. ``kdlab.models.streaming`` does that.
"""

from __future__ import annotations

import torch
from torch import nn

#: Input frames read by one output frame, and the stride between output frames.
RECEPTIVE_FIELD = 7
STRIDE = 4


def subsampled_length(num_frames: int) -> int:
    """Number of output frames for ``num_frames`` input frames (0 if fewer than 7)."""
    return max(0, (num_frames - 3) // STRIDE)


class Conv2dSubsampling(nn.Module):
    """(B, T, F) log-mel frames -> (B, (T-3)//4, d_model).

    Args:
        input_dim: feature bins F (at least 7).
        d_model: output width D.
        channels: convolution channels (``d_model`` is the usual choice).
    """

    def __init__(self, input_dim: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, stride=2)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=2)
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.linear = nn.Linear(channels * freq, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for the ReLU convolutions, Xavier for the projection, zero biases (module docstring)."""
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input lengths -> (B,) output lengths ``(T - 3) // 4`` (clamped at 0)."""
        return torch.clamp((lengths - 3) // STRIDE, min=0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) with T >= 7 -> (B, (T-3)//4, D). Valid output frames never read padding."""
        x = torch.relu(self.conv1(features.unsqueeze(1)))
        x = torch.relu(self.conv2(x))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.linear(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
