"""Materialisation: a smaller dense encoder equal to the gated / factorised one (acceptance 1),
whose real parameter count equals the expected count at the deterministic state (acceptance 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.compress.factorise import factorise_encoder
from kdlab.compress.lowrank import LowRankLinear, add_rank_gate, factorise_linears
from kdlab.compress.materialise import ConstantLinear, load_compressed, materialise, save_compressed
from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import GateSet, L0Config, attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config

torch.set_num_threads(1)

CLOSED, OPEN = -6.0, 6.0  # deterministic masks exactly 0 and exactly 1 (soft in (-2.4, 2.4))


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    """Tiny eval-mode encoder with non-trivial norm parameters and statistics (so folds show)."""
    torch.manual_seed(seed)
    encoder = ConformerEncoder(teacher_config("tiny", dropout=0.0, **overrides))
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return encoder.eval()


def features(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def randomise(gates: GateSet, seed: int, closed_structure: float = 0.15) -> None:
    """Per unit: exactly closed, exactly open or soft (1/3 each); whole structures closed at times."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates.gates.values():
            choice = torch.randint(0, 3, (gate.n,), generator=g)
            soft = torch.empty(gate.n).uniform_(-2.2, 2.2, generator=g)
            values = torch.where(choice == 0, CLOSED, torch.where(choice == 1, OPEN, soft))
            if torch.rand((), generator=g) < closed_structure:
                values.fill_(CLOSED)
            gate.log_alpha.copy_(values)


def set_gate(gate: nn.Module, values) -> None:
    with torch.no_grad():
        gate.log_alpha.copy_(torch.as_tensor(values, dtype=gate.log_alpha.dtype).expand_as(gate.log_alpha))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def check_equal(gated: ConformerEncoder, small: ConformerEncoder, streaming: bool) -> None:
    """Acceptance 1 (outputs, offline batch with padding / chunked streaming) and 2 (counts)."""
    x, lengths = features(2, 77), torch.tensor([77, 58])
    reference, ref_lengths, _ = gated(x, lengths)
    out, out_lengths, _ = small(x, lengths)
    assert torch.equal(out_lengths, ref_lengths)
    for i, n in enumerate(ref_lengths.tolist()):
        assert max_diff(out[i, :n], reference[i, :n]) <= 1e-5
    if streaming:
        full, _, _ = gated(x[:1], lengths[:1])
        outputs, state, start = [], None, 0
        for size in (9, 14, 3, 21):
            chunk, state = small.stream(x[:1, start : start + size], state)
            outputs.append(chunk)
            start += size
        outputs.append(small.stream(x[:1, start:], state, final=True)[0])
        assert max_diff(torch.cat(outputs, dim=1), full) <= 1e-5
    assert expected_params(gated, deterministic=True).item() == small.num_parameters()
    assert expected_params(small).item() == small.num_parameters()  # ungated: the plain count


STREAMING = dict(streaming=True, chunk_size=3, left_chunks=1)


@pytest.mark.parametrize("streaming", [False, True])
def test_random_gate_states_materialise_exactly(streaming):
    removed = 0
    for seed in range(8):
        gated = make_encoder(seed, **(STREAMING if streaming else {}))
        randomise(attach_gates(gated), seed)
        small = materialise(gated)
        check_equal(gated, small, streaming)
        assert small.num_parameters() < gated.num_parameters()
        assert len(GateSet.from_encoder(small)) == 0 and len(GateSet.from_encoder(gated)) == 16  # input untouched
        removed += sum(dims[key] == 0 for dims in small.config.layer_dims for key in dims)
    assert removed > 0  # some branches were dropped along the way


@pytest.mark.parametrize("streaming", [False, True])
def test_half_rate_encoders_materialise_exactly(streaming):
    half_rate = dict(num_layers=3, half_rate_blocks=[1, 2], **(dict(STREAMING, chunk_size=4) if streaming else {}))
    for seed in range(4):
        gated = make_encoder(seed, **half_rate)
        randomise(attach_gates(gated), seed)
        small = materialise(gated)
        assert small.config.half_rate_blocks == [1, 2]
        check_equal(gated, small, streaming)


def test_constant_of_the_first_half_rate_block_folds_into_the_pair_projection():
    gated = make_encoder(num_layers=3, half_rate_blocks=[1, 2])
    gates = attach_gates(gated)
    set_gate(gates.gates["blocks.1.ffn1"], CLOSED)  # open branch, no unit: a constant, first in its block
    set_gate(gates.gates["blocks.1.ffn1_gate"], 0.5)
    small = materialise(gated)
    assert small.config.layer_dims[1]["ffn1_dim"] == 0
    assert not torch.equal(small.downsample.linear.bias, gated.downsample.linear.bias)
    check_equal(gated, small, streaming=False)


@pytest.mark.parametrize("streaming", [False, True])
def test_factorised_and_rank_gated_states_materialise_exactly(streaming):
    kinds = set()
    for seed in range(6):
        gated = make_encoder(seed, **(STREAMING if streaming else {}))
        report = factorise_encoder(gated, energy=0.5, rank_gates=True, seed=seed)
        assert len(report.ranks) == 20  # every matrix of the tiny model saves at half its energy
        gates = attach_gates(gated, L0Config(ranks=False))  # structures + the rank gates set above
        assert set(gates.kinds.values()) == {"heads", "ffn_units", "conv_channels", "branches", "ranks"}
        randomise(gates, seed)
        small = materialise(gated)
        check_equal(gated, small, streaming)
        kinds |= {type(m) for m in small.modules() if isinstance(m, (nn.Linear, LowRankLinear, ConstantLinear))}
    assert kinds == {nn.Linear, LowRankLinear, ConstantLinear}  # all three outcomes were exercised


def test_soft_masks_are_folded_and_all_closed_units_removed():
    gated = make_encoder()
    gates = attach_gates(gated)
    for gate in gates.gates.values():
        set_gate(gate, 0.7)  # every mask soft (0.8)
    set_gate(gates.gates["blocks.1.attn"], [CLOSED, 0.3])
    small = materialise(gated)
    assert small.config.layer_dims[0] == {"ffn1_dim": 64, "num_heads": 2, "conv_channels": 32, "ffn2_dim": 64}
    assert small.config.layer_dims[1]["num_heads"] == 1
    check_equal(gated, small, streaming=False)


@pytest.mark.parametrize("streaming", [False, True])
def test_conv_channel_masks_fold_into_pointwise2_columns_only(streaming):
    """The conv gate multiplies pointwise2's input (after BatchNorm and SiLU): a closed channel loses
    its GLU pair, depthwise filter, norm entries and pointwise2 column; a soft value scales that
    column and nothing else (depthwise, norm and pointwise2's bias are copied as they are)."""
    gated = make_encoder(**(STREAMING if streaming else {}))
    gates = attach_gates(gated, L0Config(heads=False, ffn_units=False, branches=False, ranks=False))
    values = torch.tensor([CLOSED, OPEN, 0.9, -0.8] * 8)  # closed, open, soft (≈ 0.75), soft (≈ 0.27)
    for gate in gates.gates.values():
        set_gate(gate, values)
    small = materialise(gated)
    check_equal(gated, small, streaming)
    for block, small_block in zip(gated.blocks, small.blocks):
        mask = block.conv.gate.deterministic_mask().detach()
        kept = torch.nonzero(mask).reshape(-1)
        assert len(kept) == 24 and bool(((mask[kept] > 0) & (mask[kept] < 1)).any())
        conv, small_conv = block.conv, small_block.conv
        torch.testing.assert_close(small_conv.pointwise2.weight, conv.pointwise2.weight[:, kept] * mask[kept])
        assert torch.equal(small_conv.pointwise2.bias, conv.pointwise2.bias)
        assert torch.equal(small_conv.depthwise.weight, conv.depthwise.weight[kept])
        assert torch.equal(small_conv.batch_norm.running_var, conv.batch_norm.running_var[kept])
        assert torch.equal(small_conv.pointwise1.weight, conv.pointwise1.weight[torch.cat([kept, kept + 32])])


@pytest.mark.parametrize("block", [0, 1])
@pytest.mark.parametrize("branch", ["ffn1", "attn", "conv", "ffn2"])
def test_open_branch_without_units_is_dropped_and_its_constant_folded(branch, block):
    """Fold targets: the previous surviving branch, or the block input's producer (previous
    block's final norm / the subsampling), when every earlier branch of the block is gone."""
    for closed_before in (False, True):
        gated = make_encoder()
        gates = attach_gates(gated)
        set_gate(gates.gates[f"blocks.{block}.{branch}"], CLOSED)
        for gate_name in ("ffn1", "attn", "conv", "ffn2")[: ("ffn1", "attn", "conv", "ffn2").index(branch)]:
            if closed_before:
                set_gate(gates.gates[f"blocks.{block}.{gate_name}_gate"], CLOSED)
        set_gate(gates.gates[f"blocks.{block}.{branch}_gate"], 0.5)  # open and soft
        small = materialise(gated)
        key = {"attn": "num_heads", "conv": "conv_channels"}.get(branch, f"{branch}_dim")
        assert small.config.layer_dims[block][key] == 0
        check_equal(gated, small, streaming=False)


@pytest.mark.parametrize("streaming", [False, True])
def test_everything_closed_leaves_subsampling_and_final_norms(streaming):
    gated = make_encoder(**(STREAMING if streaming else {}))
    for gate in attach_gates(gated).gates.values():
        set_gate(gate, CLOSED)
    small = materialise(gated)
    assert all(value == 0 for dims in small.config.layer_dims for value in dims.values())
    fixed = sum(p.numel() for p in gated.subsampling.parameters()) + sum(
        p.numel() for block in gated.blocks for p in block.final_norm.parameters()
    )
    assert small.num_parameters() == fixed
    check_equal(gated, small, streaming)
    units_closed = make_encoder()  # branch gates open, every unit closed: constants folded instead
    gates = attach_gates(units_closed)
    for name, gate in gates.gates.items():
        set_gate(gate, OPEN if gates.kinds[name] == "branches" else CLOSED)
    check_equal(units_closed, materialise(units_closed), streaming=False)


def test_low_rank_layer_becomes_dense_or_constant_when_that_is_smaller():
    gated = make_encoder()
    factorise_linears(gated, {"blocks.0.ffn1.linear1": 12, "blocks.0.attn.q_proj": 8})
    add_rank_gate(gated.blocks[0].ffn1.linear1).eval()
    set_gate(add_rank_gate(gated.blocks[0].attn.q_proj).eval(), CLOSED)  # no rank component left
    gates = attach_gates(gated, L0Config(ranks=False))
    set_gate(gates.gates["blocks.0.ffn1"], [OPEN] * 3 + [CLOSED] * 61)  # 3 x 32 dense < 12 x (3 + 32)
    small = materialise(gated)
    assert type(small.blocks[0].ffn1.linear1) is nn.Linear and small.blocks[0].ffn1.linear1.out_features == 3
    assert isinstance(small.blocks[0].attn.q_proj, ConstantLinear)
    check_equal(gated, small, streaming=False)


def test_save_and_load_round_trip(tmp_path):
    gated = make_encoder(**STREAMING)
    factorise_encoder(gated, energy=0.5, rank_gates=True)
    gates = attach_gates(gated, L0Config(ranks=False))
    randomise(GateSet.from_encoder(gated), seed=5)
    set_gate(gates.gates["blocks.1.attn"], OPEN)
    set_gate(gates.gates["blocks.1.attn_gate"], OPEN)
    set_gate(gated.blocks[1].attn.k_proj.gate, CLOSED)
    small = materialise(gated)
    with pytest.raises(ValueError, match="materialise"):
        save_compressed(gated, tmp_path / "gated.pt")
    save_compressed(small, tmp_path / "small.pt")
    loaded = load_compressed(tmp_path / "small.pt")
    assert loaded.config == small.config and not loaded.training
    assert isinstance(loaded.blocks[1].attn.k_proj, ConstantLinear)
    assert any(isinstance(m, LowRankLinear) for m in loaded.modules())
    x, lengths = features(2, 61), torch.tensor([61, 40])
    assert torch.equal(loaded(x, lengths)[0], small(x, lengths)[0])
    assert loaded.num_parameters() == small.num_parameters()
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a compressed encoder"):
        load_compressed(tmp_path / "other.pt")


def test_materialise_keeps_dtype_mode_and_leaves_the_input_alone():
    gated = make_encoder().to(torch.float64).train()
    gates = attach_gates(gated)
    randomise(gates, seed=2)
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    small = materialise(gated)
    assert small.training and next(small.parameters()).dtype == torch.float64
    assert all(torch.equal(before[k], v) for k, v in gated.state_dict().items())
    gated.eval(), small.eval()
    x, lengths = features(2, 61).double(), torch.tensor([61, 40])
    assert max_diff(small(x, lengths)[0][1, :9], gated(x, lengths)[0][1, :9]) <= 1e-10


def test_expected_params_gradient_reaches_every_gate():
    gated = make_encoder()
    factorise_encoder(gated, energy=0.5, rank_gates=True)
    gates = attach_gates(gated, L0Config(ranks=False))
    gates = GateSet.from_encoder(gated)
    with torch.no_grad():
        for gate in gates.gates.values():
            gate.log_alpha.uniform_(-2.0, 2.0, generator=torch.Generator().manual_seed(gate.n))
    expected_params(gated).backward()
    kinds = set()
    for name, gate in gates.gates.items():
        assert gate.log_alpha.grad is not None and (gate.log_alpha.grad > 0).all(), name  # more open = more params
        kinds.add(gates.kinds[name])
    assert kinds == {"heads", "ffn_units", "conv_channels", "branches", "ranks"}
    for gate in gates.gates.values():  # saturated gates keep finite gradients
        gate.log_alpha.grad = None
        set_gate(gate, 60.0)
    expected_params(gated).backward()
    assert all(torch.isfinite(gate.log_alpha.grad).all() for gate in gates.gates.values())


def test_narrow_front_end_is_counted_and_kept_by_materialisation():
    encoder = ConformerEncoder(teacher_config("tiny", subsampling_channels=6)).eval()
    gates = attach_gates(encoder)
    randomise(gates, seed=5)
    encoder.eval()
    small = materialise(encoder)
    assert small.subsampling.convs[0][0].out_channels == 6
    assert float(expected_params(encoder, deterministic=True)) == small.num_parameters()
