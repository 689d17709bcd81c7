"""The SSL objective as a compression loss: BEST-RQ masked prediction of a student encoder.

    objective = SSLObjective(pretrain.model)                  # the pre-training's head and quantiser
    masked, labels, frame_mask = objective.mask(features, lengths)
    out, out_lengths, hidden = student(masked, lengths)
    loss, accuracy = objective.loss(out, out_lengths, labels, frame_mask)

Without "kd" the sequential route compresses the SSL encoder with the objective it was trained
with (no teacher at all); with "kd" layer distillation from the SSL encoder is added on the same
masked input. The head starts as a copy of the pre-trained one and trains with the student (a
student keeps ``d_model``, so the head fits); the quantiser is the frozen random projection that
made the pre-training's targets, so the targets are the same ones.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdlab.models.bestrq import BestRQModel, mask_spans, masked_prediction_loss, stack_frames, subsampled_mask


class SSLObjective(nn.Module):
    """BEST-RQ masked prediction for any encoder of the SSL model's width (see the module docstring)."""

    def __init__(self, ssl_model: BestRQModel) -> None:
        super().__init__()
        self.config, self.stack = ssl_model.config, ssl_model.stack
        self.quantizer = copy.deepcopy(ssl_model.quantizer)
        self.head = copy.deepcopy(ssl_model.head).requires_grad_(True)

    def mask(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> (masked features (B, T, F), code labels (B, T // stack, K),
        frame mask (B, T) bool); spans drawn from the global RNG (the trainer seeds it)."""
        labels = self.quantizer(stack_frames(features, self.stack))
        c = self.config
        masked, frame_mask = mask_spans(features, lengths, c.mask_prob, c.mask_span, None, c.noise_std)
        return masked, labels, frame_mask

    def loss(
        self, out: torch.Tensor, out_lengths: torch.Tensor, labels: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, T', D) of the masked input -> (cross-entropy per masked frame, accuracy)."""
        num_out = out.shape[1]
        valid = torch.arange(num_out, device=out.device)[None, :] < out_lengths[:, None]
        mask = subsampled_mask(frame_mask, num_out, self.stack) & valid
        logits = self.head(out).unflatten(-1, (self.config.num_codebooks, self.config.codebook_size))
        return masked_prediction_loss(logits, labels[:, :num_out], mask)
