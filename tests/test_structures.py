"""L0 structures: gates attached at the conformer's prunable places, as registered modules."""

from __future__ import annotations

import json

import pytest
import torch

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lowrank import LowRankLinear, factorise_linears
from kdlab.compress.structures import BranchGate, GateSet, L0Config, attach_gates, gate_seed, remove_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config

torch.set_num_threads(1)


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    torch.manual_seed(seed)
    return ConformerEncoder(teacher_config("tiny", dropout=0.0, **overrides)).eval()


def features(batch: int = 2, frames: int = 45, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def test_default_gates_sit_on_every_prunable_place_with_the_right_sizes():
    encoder = make_encoder()
    gates = attach_gates(encoder)
    config = encoder.config
    assert len(gates) == 8 * config.num_layers
    for i, block in enumerate(encoder.blocks):
        expected = {
            f"blocks.{i}.attn": (block.attn.gate, "heads", config.num_heads),
            f"blocks.{i}.ffn1": (block.ffn1.gate, "ffn_units", config.ffn_dim),
            f"blocks.{i}.ffn2": (block.ffn2.gate, "ffn_units", config.ffn_dim),
            f"blocks.{i}.conv": (block.conv.gate, "conv_channels", config.conv_channels),
        }
        for branch in ("ffn1", "attn", "conv", "ffn2"):
            expected[f"blocks.{i}.{branch}_gate"] = (getattr(block, f"{branch}_gate"), "branches", 1)
        for name, (module, kind, size) in expected.items():
            assert gates.gates[name] is module and gates.kinds[name] == kind
            assert isinstance(module, HardConcreteGate) and module.n == size
            assert gates.probabilities()[name].shape == gates.deterministic_masks()[name].shape == (size,)
        assert block.attn_gate().shape == ()  # branch gates are scalars on the residual
        assert isinstance(block.attn_gate, BranchGate)


def test_init_keep_probabilities_follow_the_config():
    encoder = make_encoder()
    config = L0Config(heads_keep_prob=0.9, ffn_units_keep_prob=0.3, conv_channels_keep_prob=0.8, branches_keep_prob=0.7)
    gates = attach_gates(encoder, config)
    wanted = {"heads": 0.9, "ffn_units": 0.3, "conv_channels": 0.8, "branches": 0.7}
    for name, gate in gates.gates.items():
        torch.testing.assert_close(torch.sigmoid(gate.log_alpha), torch.full((gate.n,), wanted[gates.kinds[name]]))


def test_gates_are_registered_submodules_that_move_with_the_encoder():
    encoder = make_encoder()
    gates = attach_gates(encoder)
    keys = set(encoder.state_dict())
    assert "blocks.0.attn.gate.log_alpha" in keys and "blocks.1.conv_gate.log_alpha" in keys
    parameter_ids = {id(p) for p in encoder.parameters()}
    log_alphas = list(gates.parameters())
    assert len(log_alphas) == len(gates) and all(id(p) in parameter_ids for p in log_alphas)
    encoder.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in gates.parameters())
    assert encoder.num_parameters() == make_encoder().num_parameters()  # gates are not encoder parameters


def test_structures_can_be_switched_off():
    encoder = make_encoder()
    gates = attach_gates(encoder, L0Config(heads=False, branches=False))
    assert set(gates.kinds.values()) == {"ffn_units", "conv_channels"}
    assert encoder.blocks[0].attn.gate is None and encoder.blocks[0].ffn1_gate is None
    assert encoder.blocks[0].ffn1.gate is not None


def test_rank_components_of_low_rank_layers_are_gated():
    encoder = make_encoder()
    factorise_linears(encoder, {"blocks.0.ffn1.linear1": 5})
    gates = attach_gates(encoder, L0Config(heads=False, ffn_units=False, conv_channels=False, branches=False))
    layer = encoder.blocks[0].ffn1.linear1
    assert isinstance(layer, LowRankLinear)
    assert list(gates.gates) == ["blocks.0.ffn1.linear1"] and gates.gates["blocks.0.ffn1.linear1"] is layer.gate
    assert gates.kinds["blocks.0.ffn1.linear1"] == "ranks" and layer.gate.n == 5


def test_gates_follow_the_encoder_mode():
    x, lengths = features(), torch.tensor([45, 33])
    encoder = make_encoder()
    attach_gates(encoder, L0Config(ffn_units_keep_prob=0.5))
    assert not any(gate.training for gate in GateSet.from_encoder(encoder).gates.values())
    torch.testing.assert_close(encoder(x, lengths)[0], encoder(x, lengths)[0], atol=0, rtol=0)
    encoder.train()
    assert not torch.equal(encoder(x, lengths)[0], encoder(x, lengths)[0])  # fresh samples


def test_removing_gates_restores_the_original_model():
    x, lengths = features(), torch.tensor([45, 33])
    encoder, original = make_encoder(), make_encoder()
    keys = set(encoder.state_dict())
    gates = attach_gates(encoder, L0Config(ffn_units_keep_prob=0.5))
    assert not torch.allclose(encoder(x, lengths)[0], original(x, lengths)[0], atol=1e-3)
    removed = remove_gates(encoder)
    assert set(removed.gates) == set(gates.gates)
    assert set(encoder.state_dict()) == keys and len(GateSet.from_encoder(encoder)) == 0
    assert torch.equal(encoder(x, lengths)[0], original(x, lengths)[0])
    attach_gates(encoder)  # the places are free again


def test_attaching_twice_is_refused():
    encoder = make_encoder()
    attach_gates(encoder)
    with pytest.raises(ValueError, match="already have a gate"):
        attach_gates(encoder)


def test_seeds_are_reproducible_and_distinct_per_gate():
    a = attach_gates(make_encoder().train(), L0Config(seed=3))
    b = attach_gates(make_encoder().train(), L0Config(seed=3))
    for name in a.gates:
        assert torch.equal(a.gates[name].sample(), b.gates[name].sample())
    assert gate_seed(3, "blocks.0.ffn1") != gate_seed(3, "blocks.0.ffn2") != gate_seed(4, "blocks.0.ffn2")
    assert not torch.equal(a.gates["blocks.0.ffn1"].sample(), a.gates["blocks.0.ffn2"].sample())


def test_absent_branches_get_no_gates():
    encoder = make_encoder(layer_dims=[{"num_heads": 0, "ffn2_dim": 0}, {}])
    gates = attach_gates(encoder)
    assert "blocks.0.attn" not in gates.gates and "blocks.0.attn_gate" not in gates.gates
    assert "blocks.0.ffn2_gate" not in gates.gates and "blocks.1.attn" in gates.gates


def test_config_round_trip_and_validation():
    config = L0Config(ranks=False, ffn_units_keep_prob=0.4, seed=7)
    assert L0Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"heads_keep_prob must be in \(0, 1\), got 1.0"):
        L0Config(heads_keep_prob=1.0)
    with pytest.raises(ValueError, match="unknown L0Config keys"):
        L0Config.from_dict({"head": True})
