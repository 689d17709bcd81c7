"""BEST-RQ: frozen quantiser, span masking, masked-frame loss and accuracy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kdlab.models.bestrq import (
    BestRQConfig,
    BestRQModel,
    RandomProjectionQuantizer,
    mask_spans,
    masked_prediction_loss,
    stack_frames,
    subsampled_mask,
)

torch.set_num_threads(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_quantizer_is_frozen_and_deterministic_per_seed():
    a, b, c = (RandomProjectionQuantizer(320, 16, 64, num_codebooks=2, seed=s) for s in (7, 7, 8))
    assert list(a.parameters()) == [] and set(a.state_dict()) == {"projection", "codebooks"}
    x = torch.randn(2, 30, 320, generator=gen(0))
    labels = a(x)
    assert labels.shape == (2, 30, 2) and labels.dtype == torch.int64
    assert torch.equal(labels, b(x))
    assert not torch.equal(labels, c(x))
    assert torch.allclose(a.codebooks.norm(dim=-1), torch.ones(2, 64))


def test_labels_are_the_nearest_normalised_code_and_use_many_codes():
    quantizer = RandomProjectionQuantizer(320, 16, 256, seed=0)
    x = torch.randn(1, 2000, 320, generator=gen(1))
    labels = quantizer(x)[0, :, 0]
    projected = nn.functional.normalize(x[0] @ quantizer.projection[0], dim=-1)
    assert torch.equal(labels, torch.cdist(projected, quantizer.codebooks[0]).argmin(dim=-1))
    assert labels.unique().numel() > 0.8 * 256


def test_stack_frames_groups_four_consecutive_frames():
    x = torch.arange(2 * 9 * 3, dtype=torch.float32).reshape(2, 9, 3)
    stacked = stack_frames(x)
    assert stacked.shape == (2, 2, 12)
    assert torch.equal(stacked[1, 1], x[1, 4:8].flatten())


def test_mask_spans_covers_the_requested_fraction_inside_lengths():
    features = torch.randn(3, 200, 8, generator=gen(2)) + 5.0  # far from the noise
    lengths = torch.tensor([200, 120, 15])
    masked, mask = mask_spans(features, lengths, mask_prob=0.3, span=10, generator=gen(3))
    counts = mask.sum(dim=1).tolist()  # 0.3 L / 10 = 6, 3.6, 0.45 spans of 10 frames
    assert counts[0] == 60 and counts[1] in (30, 40) and counts[2] in (0, 10)
    assert not mask[1, 120:].any() and not mask[2, 15:].any()
    assert torch.equal(masked[~mask], features[~mask])
    noise = masked[mask]
    assert abs(float(noise.mean())) < 0.02 and 0.09 < float(noise.std()) < 0.11
    for row in mask.int().tolist():  # runs of masked frames are whole spans
        runs = "".join(map(str, row)).split("0")
        assert all(len(run) % 10 == 0 for run in runs)


def test_mask_spans_is_seeded_and_reaches_every_position():
    features, lengths = torch.zeros(1, 40, 2), torch.tensor([40])
    first = mask_spans(features, lengths, 0.25, 5, generator=gen(9))
    again = mask_spans(features, lengths, 0.25, 5, generator=gen(9))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    g = gen(4)
    hits = sum(mask_spans(features, lengths, 0.25, 5, generator=g)[1][0].int() for _ in range(300))
    assert hits.min() > 0  # first and last frames included
    assert abs(float(hits.float().mean()) / 300 - 0.25) < 1e-6  # 0.25·40 / 5 = 2 spans, no rounding
    short = [int(mask_spans(features[:, :15], torch.tensor([15]), 0.3, 10, generator=g)[1].sum()) for _ in range(400)]
    assert set(short) == {0, 10} and abs(sum(short) / 400 - 0.3 * 15) < 0.6  # E = 0.45 spans of 10 frames


def test_subsampled_mask_marks_frames_with_any_masked_input():
    frame_mask = torch.zeros(1, 14, dtype=torch.bool)
    frame_mask[0, [5, 12]] = True
    assert subsampled_mask(frame_mask, 3).tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="need >= 16 input frames"):
        subsampled_mask(frame_mask, 4)


def test_loss_and_accuracy_count_masked_frames_only():
    labels = torch.tensor([[[0], [1], [2], [3]]])  # (B=1, T'=4, K=1)
    mask = torch.tensor([[True, False, True, True]])
    logits = torch.zeros(1, 4, 1, 4)
    logits[0, 0, 0, 0] = 5.0  # right
    logits[0, 2, 0, 1] = 5.0  # wrong
    logits[0, 3, 0, 3] = 5.0  # right
    loss, accuracy = masked_prediction_loss(logits, labels, mask)
    expected = nn.functional.cross_entropy(logits[0, [0, 2, 3], 0], labels[0, [0, 2, 3], 0])
    assert float(loss) == pytest.approx(float(expected)) and float(accuracy) == pytest.approx(2 / 3)
    logits[0, 1] = torch.randn(1, 4) * 100  # an unmasked frame changes nothing
    assert torch.equal(masked_prediction_loss(logits, labels, mask)[0], loss)
    empty_loss, empty_accuracy = masked_prediction_loss(logits.requires_grad_(), labels, torch.zeros_like(mask))
    assert float(empty_loss.detach()) == 0.0 and empty_loss.requires_grad and math.isnan(float(empty_accuracy))


class FrameIndexEncoder(nn.Module):
    """Rigged encoder: records its input, outputs each subsampled frame's index (T' = T // 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(d_model=1)
        self.seen = None

    def forward(self, features, lengths):
        self.seen = features
        b, t, _ = features.shape
        index = torch.arange(t // 4, dtype=torch.float32).expand(b, -1)[..., None]
        return index, lengths // 4, [index]


class OracleHead(nn.Module):
    """Rigged head: right label on even frames, a wrong one on odd frames."""

    def __init__(self, labels: torch.Tensor, codebook_size: int) -> None:
        super().__init__()
        self.labels, self.size = labels, codebook_size

    def forward(self, index):
        t = index[0, :, 0].long()
        wrong = (self.labels + 1) % self.size
        chosen = torch.where((t % 2 == 0)[None, :, None], self.labels, wrong)  # (B, T', K)
        return nn.functional.one_hot(chosen, self.size).float().flatten(2) * 20.0


def test_model_masks_the_input_and_scores_masked_frames():
    config = BestRQConfig(codebook_dim=8, codebook_size=32, num_codebooks=2, mask_prob=0.3, mask_span=6, seed=1)
    model = BestRQModel(FrameIndexEncoder(), config, input_dim=10)
    features, lengths = torch.randn(2, 80, 10, generator=gen(5)), torch.tensor([80, 52])
    labels = model.quantizer(stack_frames(features))
    model.head = OracleHead(labels, 32)
    loss, accuracy = model(features, lengths, generator=gen(6))
    masked, frame_mask = mask_spans(features, lengths, 0.3, 6, generator=gen(6))
    assert torch.equal(model.encoder.seen, masked)
    out_mask = subsampled_mask(frame_mask, 20) & (torch.arange(20)[None] < (lengths // 4)[:, None])
    even = (torch.arange(20) % 2 == 0).expand(2, -1)
    assert float(accuracy) == pytest.approx(float((even & out_mask).sum() / out_mask.sum()))
    assert 0 < float(accuracy) < 1 and float(loss) > 1.0


@pytest.mark.parametrize("factor", [4, 8])
def test_model_trains_with_the_real_conformer_encoder(factor):
    from kdlab.models.conformer import ConformerEncoder, teacher_config

    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config("tiny", dropout=0.0, subsampling_factor=factor))
    model = BestRQModel(encoder, BestRQConfig(codebook_size=64))
    assert model.stack == factor and model.quantizer.projection.shape[1] == factor * 80
    loss, accuracy = model(torch.randn(2, 63, 80, generator=gen(1)), torch.tensor([63, 40]), generator=gen(2))
    assert torch.isfinite(loss) and 0.0 <= float(accuracy) <= 1.0
    assert float(loss.detach()) == pytest.approx(math.log(64), rel=0.3)  # untrained: near uniform over codes
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in model.quantizer.buffers())


def test_config_round_trip_and_errors():
    config = BestRQConfig(num_codebooks=2)
    assert BestRQConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"mask_prob .* must be in \(0, 1\)"):
        BestRQConfig(mask_prob=1.2)
    with pytest.raises(ValueError, match="pass encoder_dim"):
        BestRQModel(nn.Identity(), config)
