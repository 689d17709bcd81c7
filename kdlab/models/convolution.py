"""Convolution branch of a conformer block.

LayerNorm -> pointwise Linear(D, 2C) -> GLU -> zero padded frames -> depthwise Conv1d(C, kernel)
-> BatchNorm -> SiLU -> [gate] -> pointwise Linear(C, D) -> dropout.

* GLU pairs: output channel ``c`` is ``a_c * sigmoid(b_c)`` with ``a_c`` from row ``c``
  and ``b_c`` from row ``C + c`` of ``pointwise1``.
* Prunable place: ``gate`` (default ``None``). When set, it is an ``nn.Module`` whose
  ``forward()`` returns a ``(C,)`` mask multiplied into the SiLU output, i.e. into the input of
  ``pointwise2``. It sits after the normalisation on purpose: a per-channel scale *before*
  BatchNorm is divided back out by the batch statistics in training, so the loss could hardly
  reach the gate (docs/conv_gate_placement.md). A gated-off channel contributes exactly nothing,
  so removing channel ``c`` drops its GLU pair, depthwise filter, norm entry and column ``c`` of
  ``pointwise2``; a soft mask value folds into that column.
* Streaming (``causal=True``): the depthwise convolution sees only the current and the
  ``kernel - 1`` previous frames (left zero padding, or the cached tail of the previous
  chunk). Otherwise it is centred ("same" zero padding). The cached tail holds GLU outputs,
  which the gate does not touch.
* Norm: per-channel BatchNorm, not LayerNorm over channels. In eval mode it is a fixed
  per-channel affine map, so it is exact under chunking, independent of the batch, and
  removing channel ``c`` removes exactly entry ``c`` (a LayerNorm over channels would
  change every other channel's statistics when a channel is pruned). In training the
  statistics use valid frames only, so padding does not leak into them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, C, T) whose training statistics skip padded frames."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T); valid (B, 1, T) bool, True at real frames, or None (all real)."""
        if not self.training or valid is None:
            return super().forward(x)
        w = valid.to(x.dtype)
        n = w.sum()
        mean = (x * w).sum((0, 2)) / n
        centred = x - mean[:, None]
        var = (centred.square() * w).sum((0, 2)) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (n / (n - 1).clamp(min=1)), alpha=m)
            self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return centred * scale[:, None] + self.bias[:, None]


class ConvolutionModule(nn.Module):
    """(B, T, D) -> (B, T, D) convolution branch (no residual).

    Args:
        d_model: model width D.
        channels: GLU / depthwise channels C.
        kernel: depthwise kernel size (odd).
        dropout: dropout on the branch output.
        causal: streaming mode (left context only).
    """

    def __init__(self, d_model: int, channels: int, kernel: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.causal, self.kernel = causal, kernel
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Linear(d_model, 2 * channels)
        pad = 0 if causal else (kernel - 1) // 2
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=pad, groups=channels)
        self.batch_norm = MaskedBatchNorm1d(channels)
        self.pointwise2 = nn.Linear(channels, d_model)
        self.dropout = nn.Dropout(dropout)
        self.gate: nn.Module | None = None

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, past: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: (B, T, D).
            pad_mask: (B, T, 1) bool, True at padded frames, or None.
            past: causal only: (B, C, kernel - 1) GLU outputs of the previous frames
                (None = zeros, i.e. the start of the utterance).
        Returns:
            (B, T, D) branch output, and in causal mode the (B, C, kernel - 1) tail to pass
            as ``past`` with the next chunk (None otherwise).
        """
        h = F.glu(self.pointwise1(self.norm(x)), dim=-1)  # (B, T, C)
        if pad_mask is not None:
            h = h.masked_fill(pad_mask, 0.0)
        h = h.transpose(1, 2)  # (B, C, T)
        tail = None
        if self.causal:
            left = self.kernel - 1
            h = F.pad(h, (left, 0)) if past is None else torch.cat((past, h), dim=2)
            tail = h[:, :, h.shape[2] - left :]
        h = self.depthwise(h)
        valid = None if pad_mask is None else ~pad_mask.transpose(1, 2)
        h = F.silu(self.batch_norm(h, valid)).transpose(1, 2)  # (B, T, C)
        if self.gate is not None:
            h = h * self.gate()
        return self.dropout(self.pointwise2(h)), tail
