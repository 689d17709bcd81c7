"""Factorising the conformer's linear layers: budgets met, break-even enforced and reported."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdlab.compress.factorise import encoder_linear_names, encoder_param_budget, factorise_encoder
from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lowrank import LowRankLinear, break_even_rank, linear_spectra, rank_by_energy
from kdlab.models.conformer import ConformerEncoder, teacher_config

torch.set_num_threads(1)


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    torch.manual_seed(seed)
    return ConformerEncoder(teacher_config("tiny", dropout=0.0, **overrides)).eval()


def features(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 61, 80, generator=torch.Generator().manual_seed(seed)), torch.tensor([61, 44])


def test_candidate_names_cover_the_included_parts():
    encoder = make_encoder(layer_dims=[{"num_heads": 0}, {}])
    names = encoder_linear_names(encoder)
    assert len(names) == 6 + 10 and "blocks.0.attn.q_proj" not in names and "blocks.1.attn.q_proj" in names
    assert all(n.split(".")[2] == "conv" for n in encoder_linear_names(encoder, include=("conv",)))
    with pytest.raises(ValueError, match="unknown parts"):
        encoder_linear_names(encoder, include=("mlp",))


@pytest.mark.parametrize("sparsity", [0.2, 0.4])
def test_global_budget_is_met_within_one_component(sparsity):
    encoder = make_encoder()
    budget = encoder_param_budget(encoder, sparsity)
    assert budget == round((1 - sparsity) * encoder.num_parameters())
    report = factorise_encoder(encoder, method="budget", param_budget=budget)
    names = encoder_linear_names(make_encoder())
    largest_component = max(m + n for m, n in linear_spectra(make_encoder(), names)[1].values())
    assert report.params_after == encoder.num_parameters() <= budget
    assert report.params_after > budget - largest_component
    assert [r.name for r in report.records] == names
    for name, rank in report.ranks.items():
        layer = encoder.get_submodule(name)
        assert isinstance(layer, LowRankLinear) and layer.rank == rank
        assert rank <= break_even_rank(layer.out_features, layer.in_features)
    for name in report.skipped:
        assert type(encoder.get_submodule(name)) is nn.Linear
    json.dumps(report.to_dict())


def test_energy_ranks_and_break_even_skips_are_reported():
    encoder, reference = make_encoder(), make_encoder()
    spectra, _ = linear_spectra(reference, encoder_linear_names(reference))
    report = factorise_encoder(encoder, energy=0.88)
    assert report.skipped and report.ranks  # random weights: some ranks pass break-even, some do not
    for record in report.records:
        m, n = record.shape
        assert record.rank == rank_by_energy(spectra[record.name], 0.88)
        if record.rank > break_even_rank(m, n):
            assert "does not save" in record.skipped and type(encoder.get_submodule(record.name)) is nn.Linear
            assert record.params_after == record.params_before
        else:
            assert record.skipped is None and record.params_after < record.params_before
    assert report.params_after == report.params_before - sum(r.params_before - r.params_after for r in report.records)


def test_exactly_low_rank_matrices_keep_the_outputs():
    """At a matrix's full (numerical) rank the factorisation reproduces the layer; full-rank
    random matrices are skipped (energy 1 needs every component, past break-even)."""
    encoder, x_lengths = make_encoder(), features()
    low_rank = ["blocks.0.ffn1.linear1", "blocks.1.attn.v_proj", "blocks.1.conv.pointwise2"]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in low_rank:
            weight = encoder.get_submodule(name).weight
            m, n = weight.shape
            weight.copy_(torch.randn(m, 3, generator=g) @ torch.randn(3, n, generator=g) / n**0.5)
    before = encoder(*x_lengths)[0]
    report = factorise_encoder(encoder, energy=0.999999)
    assert report.ranks == {name: 3 for name in low_rank}
    assert set(report.skipped) == set(encoder_linear_names(make_encoder())) - set(low_rank)
    assert (encoder(*x_lengths)[0] - before).abs().max().item() <= 1e-5


def test_rank_gates_start_open_and_follow_the_encoder():
    encoder, x_lengths = make_encoder(), features()
    plain = make_encoder()
    factorise_encoder(plain, energy=0.5)
    report = factorise_encoder(encoder, energy=0.5, include=("ffn",), rank_gates=True, seed=1)
    assert all(name.split(".")[2] in ("ffn1", "ffn2") for name in report.ranks)
    for name, rank in report.ranks.items():
        gate = encoder.get_submodule(name).gate
        assert isinstance(gate, HardConcreteGate) and gate.n == rank and not gate.training
    factorise_encoder(encoder, energy=0.5, include=("attn", "conv"))
    torch.testing.assert_close(encoder(*x_lengths)[0], plain(*x_lengths)[0], atol=1e-6, rtol=0)  # mask 1 at p=0.99


def test_misuse_is_refused_with_a_reason():
    encoder = make_encoder()
    with pytest.raises(ValueError, match="method must be one of"):
        factorise_encoder(encoder, method="svd")
    with pytest.raises(ValueError, match="needs param_budget"):
        factorise_encoder(encoder, method="budget")
    with pytest.raises(ValueError, match="leaves .* parameters for the weights"):
        factorise_encoder(encoder, method="budget", param_budget=1000)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        encoder_param_budget(encoder, 1.5)
