"""Half-rate middle blocks (temporal U-Net): shapes, padding invariance, exact streaming, cost."""

from __future__ import annotations

import pytest
import torch

from kdlab.models.conformer import ConformerConfig, ConformerEncoder, teacher_config
from kdlab.models.half_rate import PairDownsample, half_rate_lengths

torch.set_num_threads(1)


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    torch.manual_seed(seed)
    config = dict(num_layers=3, dropout=0.0, half_rate_blocks=[1, 2])
    return ConformerEncoder(teacher_config("tiny", **{**config, **overrides})).eval()


def features(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def test_pair_downsample_starts_as_the_pair_mean_and_pads_odd_lengths_with_zeros():
    x = torch.randn(2, 5, 8)
    out = PairDownsample(8)(x)
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out[:, :2], 0.5 * (x[:, 0:4:2] + x[:, 1:4:2]))
    torch.testing.assert_close(out[:, 2], 0.5 * x[:, 4])
    assert half_rate_lengths(torch.tensor([1, 2, 5, 6])).tolist() == [1, 1, 3, 3]


def test_hidden_states_keep_the_full_rate_and_the_middle_block_sees_half_the_frames():
    encoder = make_encoder()
    seen = []
    encoder.blocks[1].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    out, lengths, hidden = encoder(features(2, 53), torch.tensor([53, 41]))
    assert seen == [(12 + 1) // 2]
    assert [h.shape for h in hidden] == [out.shape] * 4 and lengths.tolist() == [12, 9]
    torch.testing.assert_close(hidden[2][:, 0::2], hidden[2][:, 1::2][:, :6])


def test_the_middle_blocks_change_the_output_and_full_rate_blocks_need_no_downsample():
    plain = ConformerEncoder(teacher_config("tiny", num_layers=3))
    assert plain.downsample is None
    encoder = make_encoder()
    x, lengths = features(1, 53), torch.tensor([53])
    before = encoder(x, lengths)[0]
    with torch.no_grad():
        encoder.blocks[1].ffn1.linear2.weight.mul_(3.0)
    assert (encoder(x, lengths)[0] - before).abs().max() > 1e-3


@pytest.mark.parametrize("streaming", [False, True])
def test_padded_batch_equals_per_utterance(streaming):
    encoder = make_encoder(streaming=streaming, chunk_size=4, left_chunks=1)
    lengths = [61, 45, 33]
    batch = features(3, 61)
    out, out_lengths, _ = encoder(batch, torch.tensor(lengths))
    for i, n in enumerate(lengths):
        single, single_len, _ = encoder(batch[i : i + 1, :n], torch.tensor([n]))
        assert out_lengths[i] == single_len[0]
        torch.testing.assert_close(out[i, : single_len[0]], single[0], atol=1e-5, rtol=0)


def test_training_ignores_padding_content():
    x, lengths = features(2, 41), torch.tensor([41, 27])
    noisy = x.clone()
    noisy[1, 27:] = 7.0
    out_a, len_a, _ = make_encoder().train()(x, lengths)
    out_b, _, _ = make_encoder().train()(noisy, lengths)
    for i, n in enumerate(len_a):
        torch.testing.assert_close(out_a[i, :n], out_b[i, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size,left_chunks,factor", [(4, -1, 4), (2, 1, 4), (6, 0, 4), (2, 2, 8)])
def test_chunked_inference_equals_masked_forward(chunk_size, left_chunks, factor):
    encoder = make_encoder(streaming=True, chunk_size=chunk_size, left_chunks=left_chunks, subsampling_factor=factor)
    x = features(2, 97)  # 23 encoder frames at 4x, 11 at 8x: odd, so the last chunk pads a pair
    full, _, _ = encoder(x, torch.tensor([97, 97]))
    outputs, state, start = [], None, 0
    for piece in torch.randint(0, 15, (12,), generator=torch.Generator().manual_seed(chunk_size)).tolist():
        out, state = encoder.stream(x[:, start : start + piece], state)
        outputs.append(out)
        start += piece
    outputs.append(encoder.stream(x[:, start:], state, final=True)[0])
    streamed = torch.cat(outputs, dim=1)
    assert streamed.shape == full.shape
    assert (streamed - full).abs().max().item() <= 1e-5


def test_streaming_output_ignores_future_chunks():
    encoder = make_encoder(streaming=True, chunk_size=4, left_chunks=1)
    x = features(1, 97)
    out, _, _ = encoder(x, torch.tensor([97]))
    for c in range(3):
        first_unread = 4 * (c + 1) * 4 + 3
        perturbed = x.clone()
        perturbed[:, first_unread:] += 3 * torch.randn_like(perturbed[:, first_unread:])
        out_p, _, _ = encoder(perturbed, torch.tensor([97]))
        end = (c + 1) * 4
        torch.testing.assert_close(out_p[:, :end], out[:, :end], atol=1e-6, rtol=0)
        assert (out_p[:, end:] - out[:, end:]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"half_rate_blocks": [2, 2]}, r"0 <= a < b < num_layers \(3"),
        ({"half_rate_blocks": [1, 3]}, "the last block runs at full rate"),
        ({"half_rate_blocks": [1]}, "must be"),
        ({"half_rate_blocks": [1, 2], "chunk_size": 3}, "even chunk_size"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        ConformerConfig(**{"num_layers": 3, **overrides})
