"""The conv-channel gate sits where the loss can reach it (issue 14, "Gates the loss can reach").

A per-channel scale in front of BatchNorm is divided back out by the batch statistics in train
mode, so a gate there receives almost no gradient while training (measured: train / eval
gradient ratio ≈ 6e-4, docs/conv_gate_placement.md). The gate now multiplies the SiLU output,
after the norm. In both modes BatchNorm is then a per-channel affine map the gate does not enter;
the modes differ only in its statistics (the batch's vs the running mean over batches of the same
distribution), i.e. by sampling noise. So we assert the train / eval ratio of ||∂L/∂mask|| lies in
[0.5, 2] for every block: wide enough for that noise (measured ≈ 0.96), three orders of magnitude
above what the old placement gives.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.convolution import MaskedBatchNorm1d

torch.set_num_threads(1)
RATIO_BOUNDS = (0.5, 2.0)


class MaskParameter(nn.Module):
    """A conv gate whose mask is a plain (C,) parameter, so ∂L/∂mask is the gradient a gate receives."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.ones(channels))

    def forward(self) -> torch.Tensor:
        return self.mask


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 80, 80, generator=g), torch.tensor([80, 71, 64, 50])


def gated_encoder_with_running_statistics() -> tuple[ConformerEncoder, list[MaskParameter]]:
    """Tiny encoder (no dropout), a mask gate on every conv branch, BatchNorm statistics averaged
    over 6 train-mode batches of the distribution the test batch comes from."""
    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config("tiny", dropout=0.0))
    gates = []
    for block in encoder.blocks:
        block.conv.gate = MaskParameter(block.conv.depthwise.in_channels)
        gates.append(block.conv.gate)
    norms = [m for m in encoder.modules() if isinstance(m, MaskedBatchNorm1d)]
    encoder.train()
    with torch.no_grad():
        for i in range(6):
            for norm in norms:
                norm.momentum = 1.0 / (i + 1)  # running statistics = the mean over the warm-up batches
            encoder(*batch(100 + i))
    return encoder, gates


def mask_gradients(encoder: ConformerEncoder, gates: list[MaskParameter], train: bool) -> list[torch.Tensor]:
    """∂L/∂mask of every gate, L a fixed random readout of the valid output frames."""
    x, lengths = batch(0)
    encoder.train(train)
    out, out_lengths, _ = encoder(x, lengths)
    valid = (torch.arange(out.shape[1])[None, :] < out_lengths[:, None])[..., None]
    readout = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(7))
    return list(torch.autograd.grad((out * valid * readout).sum(), [g.mask for g in gates]))


def test_a_conv_gate_gets_the_same_order_of_gradient_in_train_and_eval_mode():
    encoder, gates = gated_encoder_with_running_statistics()
    train, evaluation = mask_gradients(encoder, gates, True), mask_gradients(encoder, gates, False)
    for block, (g_train, g_eval) in enumerate(zip(train, evaluation)):
        assert g_eval.norm() > 0, block
        ratio = float(g_train.norm() / g_eval.norm())
        assert RATIO_BOUNDS[0] <= ratio <= RATIO_BOUNDS[1], (block, ratio)
        assert torch.nn.functional.cosine_similarity(g_train, g_eval, dim=0) > 0.5, block  # same direction too


def test_a_soft_conv_mask_changes_the_output_in_train_mode_as_much_as_in_eval_mode():
    encoder, gates = gated_encoder_with_running_statistics()
    x, lengths = batch(0)
    changes = {}
    for train in (True, False):
        encoder.train(train)
        with torch.no_grad():
            for gate in gates:
                gate.mask.fill_(1.0)
            reference = encoder(x, lengths)[0]
            for i, gate in enumerate(gates):
                gate.mask.uniform_(0.2, 1.0, generator=torch.Generator().manual_seed(i))
            changes[train] = float((encoder(x, lengths)[0] - reference).norm() / reference.norm())
    assert changes[False] > 0.01
    assert RATIO_BOUNDS[0] <= changes[True] / changes[False] <= RATIO_BOUNDS[1], changes
