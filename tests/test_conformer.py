"""Conformer encoder: shapes, padding invariance, prunable gates, streaming exactness, config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdlab.models.conformer import ConformerConfig, ConformerEncoder, teacher_config
from kdlab.models.streaming import chunk_attention_mask
from kdlab.models.subsampling import Subsampling

torch.set_num_threads(1)


class FixedMask(nn.Module):
    """A gate whose forward() returns a fixed mask."""

    def __init__(self, mask) -> None:
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.mask


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    torch.manual_seed(seed)
    encoder = ConformerEncoder(teacher_config("tiny", dropout=0.0, **overrides))
    for module in encoder.modules():  # non-trivial norm statistics so that folding errors would show
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return encoder.eval()


def features(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def test_shapes_lengths_and_hidden_states():
    encoder = make_encoder()
    x, lengths = features(3, 53), torch.tensor([53, 40, 7])
    out, out_lengths, hidden = encoder(x, lengths)
    assert out.shape == (3, (53 - 3) // 4, 32)
    assert out_lengths.tolist() == [((n - 1) // 2 - 1) // 2 for n in (53, 40, 7)] == [12, 9, 1]
    assert len(hidden) == encoder.config.num_layers + 1 and hidden[-1] is out
    torch.testing.assert_close(hidden[0], encoder.subsampling(x))
    torch.testing.assert_close(hidden[1], encoder.forward_blocks(hidden[0], out_lengths)[1])


@pytest.mark.parametrize("stride", [4, 8])
def test_subsampling_length_formula_matches_convolutions(stride):
    sub = Subsampling(80, 16, 8, stride)
    assert sub.receptive_field == 2 * stride - 1
    for frames in range(sub.receptive_field, 60):
        n = sub(torch.zeros(1, frames, 80)).shape[1]
        nested = frames
        for _ in range(stride.bit_length() - 1):
            nested = (nested - 1) // 2
        assert n == sub.output_lengths(torch.tensor([frames])).item() == nested == (frames - stride + 1) // stride


def test_eight_times_subsampling_uses_depthwise_separable_stages():
    four, eight = Subsampling(80, 16, 8, 4), Subsampling(80, 16, 8, 8)
    assert [len(stage) for stage in eight.convs] == [1, 2, 2]
    assert all(stage[0].groups == 8 and stage[1].kernel_size == (1, 1) for stage in eight.convs[1:])
    assert eight.frequency_bins(80) == 9 and four.frequency_bins(80) == 19
    with pytest.raises(ValueError, match="subsampling factor must be one of"):
        Subsampling(80, 16, 8, 6)


def test_too_short_input_is_refused():
    with pytest.raises(ValueError, match="lengths must lie in"):
        make_encoder()(features(1, 6), torch.tensor([6]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[15, .*8x subsampling needs 15 frames"):
        make_encoder(subsampling_factor=8)(features(1, 14), torch.tensor([14]))


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("factor", [4, 8])
def test_padded_batch_equals_per_utterance(streaming, factor):
    encoder = make_encoder(streaming=streaming, chunk_size=3, left_chunks=1, subsampling_factor=factor)
    lengths = [61, 45, 30]
    batch = features(3, 61)
    out, out_lengths, _ = encoder(batch, torch.tensor(lengths))
    for i, n in enumerate(lengths):
        single, single_len, _ = encoder(batch[i : i + 1, :n], torch.tensor([n]))
        assert out_lengths[i] == single_len[0]
        torch.testing.assert_close(out[i, : single_len[0]], single[0], atol=1e-5, rtol=0)


def test_training_mode_ignores_padding_content_and_amount():
    """With dropout 0, batch-norm statistics and outputs use valid frames only."""
    x, lengths = features(2, 41), torch.tensor([41, 29])
    noisy = torch.cat([x, 5 * features(2, 16, seed=9)], dim=1)
    noisy[1, 29:] = 7.0
    a, b = make_encoder().train(), make_encoder().train()
    out_a, len_a, _ = a(x, lengths)
    out_b, _, _ = b(noisy, lengths)
    for i, n in enumerate(len_a):
        torch.testing.assert_close(out_a[i, :n], out_b[i, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.blocks[0].conv.batch_norm.running_var, b.blocks[0].conv.batch_norm.running_var)


def test_zero_head_gate_equals_zeroed_out_projection_columns():
    x, lengths = features(2, 45), torch.tensor([45, 33])
    gated, plain = make_encoder(), make_encoder()
    gated.blocks[1].attn.gate = FixedMask([1.0, 0.0])
    hd = plain.config.head_dim
    with torch.no_grad():
        plain.blocks[1].attn.out_proj.weight[:, hd : 2 * hd] = 0
    torch.testing.assert_close(gated(x, lengths)[0], plain(x, lengths)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(gated(x, lengths)[0], make_encoder()(x, lengths)[0], atol=1e-3)


def test_ffn_gate_equals_scaled_linear2_columns():
    x, lengths = features(2, 45), torch.tensor([45, 33])
    mask = torch.ones(64)
    mask[:20], mask[40] = 0.0, 0.5  # zeros remove units; a soft value folds into linear2
    gated, plain = make_encoder(), make_encoder()
    gated.blocks[0].ffn2.gate = FixedMask(mask)
    with torch.no_grad():
        plain.blocks[0].ffn2.linear2.weight.mul_(mask)
    torch.testing.assert_close(gated(x, lengths)[0], plain(x, lengths)[0], atol=1e-6, rtol=0)


def test_conv_gate_equals_scaled_pointwise2_columns():
    x, lengths = features(2, 45), torch.tensor([45, 33])
    mask = torch.ones(32)
    mask[[3, 17]], mask[9] = 0.0, 0.4  # the gate multiplies pointwise2's input: zero or scale its columns
    gated, plain = make_encoder(), make_encoder()
    gated.blocks[0].conv.gate = FixedMask(mask)
    with torch.no_grad():
        plain.blocks[0].conv.pointwise2.weight.mul_(mask)
    torch.testing.assert_close(gated(x, lengths)[0], plain(x, lengths)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(gated(x, lengths)[0], make_encoder()(x, lengths)[0], atol=1e-3)


@pytest.mark.parametrize("branch", ["ffn1", "attn", "conv", "ffn2"])
def test_zero_block_gate_skips_branch(branch):
    x, lengths = features(2, 45), torch.tensor([45, 33])
    gated, removed, ones = make_encoder(), make_encoder(), make_encoder()
    setattr(gated.blocks[1], f"{branch}_gate", FixedMask(0.0))
    setattr(removed.blocks[1], branch, None)
    setattr(ones.blocks[1], f"{branch}_gate", FixedMask(1.0))
    torch.testing.assert_close(gated(x, lengths)[0], removed(x, lengths)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(ones(x, lengths)[0], make_encoder()(x, lengths)[0], atol=1e-6, rtol=0)


def test_sliced_smaller_model_equals_gated_model():
    """layer_dims builds a physically smaller block that matches a gated one once weights are sliced."""
    x, lengths = features(2, 45), torch.tensor([45, 33])
    gated = make_encoder()
    gated.blocks[0].attn.gate = FixedMask([0.0, 1.0])
    channels = torch.arange(32) % 3 != 0
    gated.blocks[0].conv.gate = FixedMask(channels.float())
    small = ConformerEncoder(
        ConformerConfig.from_dict(
            {
                **gated.config.to_dict(),
                "layer_dims": [{"num_heads": 1, "conv_channels": int(channels.sum()), "ffn2_dim": 0}, {}],
            }
        )
    ).eval()
    gated.blocks[0].ffn2_gate = FixedMask(0.0)
    state = {k: v for k, v in gated.state_dict().items() if not k.startswith("blocks.0.")}
    hd, c = 16, 32
    for name, value in gated.blocks[0].state_dict().items():
        if name.startswith("ffn2."):
            continue
        if name.startswith("attn.") and name.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            value = value[hd:]
        elif name == "attn.out_proj.weight":
            value = value[:, hd:]
        elif name.startswith("conv.pointwise1"):
            value = value[torch.cat([channels, channels])]
        elif name == "conv.pointwise2.weight":
            value = value[:, channels]
        elif name.startswith(("conv.depthwise", "conv.batch_norm")) and value.dim() > 0 and len(value) == c:
            value = value[channels]
        state[f"blocks.0.{name}"] = value
    small.load_state_dict(state)
    assert small.num_parameters() < gated.num_parameters()
    torch.testing.assert_close(small(x, lengths)[0], gated(x, lengths)[0], atol=1e-5, rtol=0)


def test_num_parameters_excludes_gates():
    encoder = make_encoder()
    before = encoder.num_parameters()
    encoder.blocks[0].attn.gate = nn.Linear(1, 2)  # any module with parameters
    encoder.blocks[0].conv_gate = nn.Linear(3, 1)
    assert encoder.num_parameters() == before == sum(p.numel() for p in make_encoder().parameters())


@pytest.mark.parametrize("left_chunks", [-1, 0, 1])
def test_chunk_attention_mask(left_chunks):
    mask = chunk_attention_mask(7, chunk_size=2, left_chunks=left_chunks)
    chunk = torch.arange(7) // 2
    for i in range(7):
        for j in range(7):
            earliest = 0 if left_chunks < 0 else chunk[i] - left_chunks
            assert mask[i, j] == (earliest <= chunk[j] <= chunk[i])
    assert mask[0, 1] and not mask[1, 2]  # sees the rest of its own chunk, never the next one


def stream_all(encoder, x, piece_sizes):
    outputs, state, start = [], None, 0
    for size in piece_sizes:
        out, state = encoder.stream(x[:, start : start + size], state)
        outputs.append(out)
        start += size
    out, state = encoder.stream(x[:, start:], state, final=True)
    return torch.cat(outputs + [out], dim=1)


@pytest.mark.parametrize(
    "chunk_size,left_chunks,factor",
    [(4, -1, 4), (3, 1, 4), (5, 0, 4), (2, 2, 4), (1, 3, 4), (4, -1, 8), (3, 1, 8), (2, 0, 8)],
)
def test_chunked_inference_equals_masked_forward(chunk_size, left_chunks, factor):
    encoder = make_encoder(streaming=True, chunk_size=chunk_size, left_chunks=left_chunks, subsampling_factor=factor)
    x = features(2, 97)  # 23 encoder frames at 4x, 11 at 8x: not a multiple of any chunk size above
    full, lengths, _ = encoder(x, torch.tensor([97, 97]))
    pieces = torch.randint(0, 15, (12,), generator=torch.Generator().manual_seed(chunk_size)).tolist()
    streamed = stream_all(encoder, x, pieces)
    assert streamed.shape == full.shape
    assert (streamed - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("factor", [4, 8])
def test_streaming_output_ignores_future_chunks(factor):
    chunk = 3 if factor == 4 else 2
    encoder = make_encoder(streaming=True, chunk_size=chunk, left_chunks=1, subsampling_factor=factor)
    x = features(1, 97)
    out, _, _ = encoder(x, torch.tensor([97]))
    for c in range(4):
        # chunk c's last frame reads input up to factor * ((c + 1) * chunk - 1) + 2 * factor - 2
        first_unread = factor * (c + 1) * chunk + factor - 1
        perturbed = x.clone()
        perturbed[:, first_unread:] += 3 * torch.randn_like(perturbed[:, first_unread:])
        out_p, _, _ = encoder(perturbed, torch.tensor([97]))
        end = (c + 1) * chunk
        torch.testing.assert_close(out_p[:, :end], out[:, :end], atol=1e-6, rtol=0)
        assert (out_p[:, end:] - out[:, end:]).abs().max() > 1e-3


def test_offline_model_looks_ahead():
    encoder = make_encoder()
    x = features(1, 97)
    perturbed = x.clone()
    perturbed[:, 60:] += 3.0
    assert (
        encoder(perturbed, torch.tensor([97]))[0][:, :3] - encoder(x, torch.tensor([97]))[0][:, :3]
    ).abs().max() > 1e-3


def test_stream_misuse_is_refused():
    x = features(1, 20)
    with pytest.raises(ValueError, match="streaming=True"):
        make_encoder().stream(x)
    encoder = make_encoder(streaming=True)
    with pytest.raises(RuntimeError, match="eval"):
        encoder.train().stream(x)
    _, state = encoder.eval().stream(x, final=True)
    with pytest.raises(RuntimeError, match="state=None"):
        encoder.stream(x, state)


def test_config_round_trip_and_presets():
    config = teacher_config("default", streaming=True, layer_dims=[{"num_heads": 2}] + [{}] * 9)
    assert ConformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.block_dims(0).num_heads == 2 and config.block_dims(1).num_heads == 4
    assert 4_000_000 <= ConformerEncoder(teacher_config("default")).num_parameters() <= 6_000_000


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"d_model": 0}, "d_model must be a positive integer, got 0"),
        ({"head_dim": 15}, "head_dim must be even"),
        ({"conv_kernel": 4}, "conv_kernel must be a positive odd integer, got 4"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
        ({"left_chunks": -2}, "left_chunks must be -1"),
        ({"input_dim": 5}, "input_dim must be an integer >= 7"),
        ({"layer_dims": [{}]}, r"one dict per block \(10\), got 1"),
        ({"layer_dims": [{"heads": 1}] + [{}] * 9}, "unknown keys"),
        ({"layer_dims": [{"ffn1_dim": -1}] + [{}] * 9}, "must be an integer >= 0"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        ConformerConfig(**overrides)


def test_config_rejects_unknown_keys_and_sizes():
    with pytest.raises(ValueError, match="unknown ConformerConfig keys"):
        ConformerConfig.from_dict({"d_model": 8, "n_heads": 2})
    with pytest.raises(ValueError, match="unknown teacher size"):
        teacher_config("huge")


def test_subsampling_channels_narrow_the_front_end_only():
    wide = ConformerEncoder(teacher_config("tiny"))
    narrow = ConformerEncoder(teacher_config("tiny", subsampling_channels=8))
    assert narrow.subsampling.convs[1][0].weight.shape == (8, 8, 3, 3)
    assert wide.subsampling.convs[1][0].weight.shape[0] == wide.config.d_model
    assert narrow.num_parameters() < wide.num_parameters()
    features, lengths = torch.randn(2, 50, 80), torch.tensor([50, 31])
    out, out_lengths, _ = narrow.eval()(features, lengths)
    assert out.shape == (2, 11, narrow.config.d_model) and out_lengths.tolist() == [11, 7]
    with pytest.raises(ValueError, match="subsampling_channels must be None"):
        teacher_config("tiny", subsampling_channels=0)


@pytest.mark.parametrize("stride", [4, 8])
def test_subsampling_init_keeps_the_scale_of_normalised_features(stride):
    # PyTorch's default init would give an output std near 0.1 here (docs/teacher_calibration.md)
    torch.manual_seed(0)
    sub = Subsampling(80, 96, 32, stride)
    x = torch.randn(4, 300, 80)
    inner = x.unsqueeze(1)
    for stage in sub.convs:
        inner = torch.relu(stage(inner))
    assert 0.5 < inner.std().item() < 2.0
    assert 0.5 < sub(x).std().item() < 3.0
    biases = [conv.bias for stage in sub.convs for conv in stage] + [sub.linear.bias]
    assert all(float(b.detach().abs().max()) == 0.0 for b in biases)
