"""Low-rank factorisation: Eckart–Young, break-even rule, rank selection, in-place swap, rank gates."""

import pytest
import torch
from torch import nn

from kdlab.compress.lowrank import (
    LowRankLinear,
    add_rank_gate,
    break_even_rank,
    eckart_young_error,
    factorise_linears,
    linear_spectra,
    rank_by_energy,
    ranks_by_global_budget,
    reconstruction_error,
    singular_values,
    truncated_svd,
)


def random_matrix(m: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def low_rank_matrix(m: int, n: int, rank: int, seed: int, noise: float = 1e-3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    core = torch.randn(m, rank, generator=generator) @ torch.randn(rank, n, generator=generator)
    return core + noise * torch.randn(m, n, generator=generator)


@pytest.mark.parametrize("rank", [1, 3, 6, 9])
def test_truncated_svd_error_equals_eckart_young_bound(rank):
    weight = random_matrix(12, 9, seed=0)
    a, b = truncated_svd(weight, rank)
    assert a.shape == (12, rank) and b.shape == (rank, 9)
    bound = eckart_young_error(singular_values(weight), rank)
    error = float(torch.linalg.matrix_norm(weight - a @ b))
    assert error == pytest.approx(bound, rel=1e-8, abs=1e-12)
    assert reconstruction_error(weight, rank) == pytest.approx(bound, rel=1e-8, abs=1e-12)


def test_square_root_of_singular_values_is_split_into_both_factors():
    weight = random_matrix(7, 5, seed=1)
    a, b = truncated_svd(weight, 3)
    s = singular_values(weight)[:3]
    assert torch.allclose(a.T @ a, torch.diag(s), atol=1e-10)
    assert torch.allclose(b @ b.T, torch.diag(s), atol=1e-10)


def test_break_even_rank_is_the_largest_rank_that_saves():
    for m in range(1, 20):
        for n in range(1, 20):
            r = break_even_rank(m, n)
            assert r * (m + n) < m * n or r == 0
            assert (r + 1) * (m + n) >= m * n
    assert break_even_rank(256, 256) == 127


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_from_linear_at_full_rank_reproduces_the_linear(dtype, atol):
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).to(dtype)
    layer = LowRankLinear.from_linear(linear, rank=4, allow_no_saving=True)
    x = torch.randn(3, 5, 6, dtype=dtype)
    assert torch.allclose(layer(x), linear(x), atol=atol)
    assert layer.first.weight.dtype == dtype and layer.second.bias is not None


def test_from_linear_at_low_rank_applies_the_truncated_svd():
    torch.manual_seed(1)
    linear = nn.Linear(10, 8, bias=False).double()
    layer = LowRankLinear.from_linear(linear, rank=2)
    a, b = truncated_svd(linear.weight, 2)
    assert torch.allclose(layer.dense_weight(), a @ b, atol=1e-12)
    assert layer.second.bias is None
    assert sum(p.numel() for p in layer.parameters()) == 2 * (10 + 8)


def test_rank_past_break_even_is_refused_with_the_numbers():
    assert break_even_rank(8, 8) == 3
    with pytest.raises(ValueError, match=r"r <= 3 \(the break-even rank\)") as info:
        LowRankLinear(8, 8, rank=4)
    assert "m*n/(m+n) = 4.00" in str(info.value) and "allow_no_saving=True" in str(info.value)
    with pytest.raises(ValueError, match="break-even"):
        LowRankLinear.from_linear(nn.Linear(8, 8), rank=4)
    assert LowRankLinear(8, 8, rank=3).rank == 3
    assert LowRankLinear(8, 8, rank=4, allow_no_saving=True).rank == 4
    with pytest.raises(ValueError, match=r"rank must be an int in \[1, min\(m, n\) = 8\]"):
        LowRankLinear(8, 8, rank=9, allow_no_saving=True)


def test_rank_by_energy_on_a_constructed_spectrum():
    sigma = torch.tensor([50.0, 30.0, 15.0, 5.0], dtype=torch.float64).sqrt()  # energies 50 %, 30 %, 15 %, 5 %
    assert rank_by_energy(sigma, 0.5) == 1
    assert rank_by_energy(sigma, 0.8) == 2
    assert rank_by_energy(sigma, 0.81) == 3
    assert rank_by_energy(sigma, 0.95) == 3
    assert rank_by_energy(sigma, 0.96) == 4
    assert rank_by_energy(sigma, 1.0) == 4
    assert rank_by_energy(torch.zeros(3), 0.9) == 0
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        rank_by_energy(sigma, 0.0)


class SmallModel(nn.Module):
    """Several linears of different shapes and spectra, one nested."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.flat = nn.Linear(16, 16)
        self.nested = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12))
        self.head = nn.Linear(12, 1)  # break-even rank 0: never worth factorising
        with torch.no_grad():
            self.nested[0].weight.copy_(low_rank_matrix(24, 16, rank=2, seed=1))  # energy in 2 components

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.nested(self.flat(x)))


def weight_params(model: nn.Module, names) -> int:
    total = 0
    for name in names:
        module = model.get_submodule(name)
        weights = [module.weight] if isinstance(module, nn.Linear) else [module.first.weight, module.second.weight]
        total += sum(w.numel() for w in weights)
    return total


def test_global_budget_is_respected_and_realised_by_factorise_linears():
    model = SmallModel()
    spectra, shapes = linear_spectra(model)
    assert set(shapes) == {"flat", "nested.0", "nested.2", "head"}
    dense_total = sum(m * n for m, n in shapes.values())
    budget = dense_total // 2
    plan = ranks_by_global_budget(spectra, shapes, budget)
    assert plan.params <= budget
    assert "head" in plan.dense and "break-even rank" in plan.dense["head"]
    # the nearly rank-2 matrix needs few components; the flat random ones get more
    assert plan.ranks["nested.0"] == 2 < plan.ranks["flat"]
    assert all(rank <= break_even_rank(*shapes[name]) for name, rank in plan.ranks.items())
    report = factorise_linears(model, plan.ranks)
    assert all(isinstance(model.get_submodule(name), LowRankLinear) for name in plan.ranks)
    assert isinstance(model.head, nn.Linear)
    assert weight_params(model, shapes) == plan.params
    for record in report:
        assert record.skipped is None
        assert record.params_after == record.rank * sum(record.shape) + record.shape[0]
        assert record.params_before == record.shape[0] * record.shape[1] + record.shape[0]
    assert model(torch.randn(2, 16)).shape == (2, 1)


def test_global_budget_grows_ranks_monotonically_and_goes_dense_at_break_even():
    spectra, shapes = linear_spectra(SmallModel())
    dense_total = sum(m * n for m, n in shapes.values())
    previous = None
    for fraction in (0.2, 0.4, 0.6):
        plan = ranks_by_global_budget(spectra, shapes, int(fraction * dense_total))
        assert plan.params <= plan.budget
        if previous is not None:
            assert all(plan.ranks.get(k, 10**9) >= v for k, v in previous.ranks.items())
        previous = plan
    everything = ranks_by_global_budget(spectra, shapes, dense_total)
    assert everything.ranks == {} and set(everything.dense) == set(shapes)
    assert everything.params == dense_total


def test_global_budget_below_minimum_is_refused():
    spectra, shapes = linear_spectra(SmallModel())
    minimum = sum(m + n for name, (m, n) in shapes.items() if name != "head") + 12
    assert ranks_by_global_budget(spectra, shapes, minimum).params == minimum
    with pytest.raises(ValueError, match=f"below the minimum {minimum}"):
        ranks_by_global_budget(spectra, shapes, minimum - 1)


def test_factorise_linears_skips_a_rank_that_does_not_save_and_says_why():
    model = SmallModel()
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = model.nested[0](x)
    report = factorise_linears(model, {"nested.0": 2, "flat": 9})
    by_name = {record.name: record for record in report}
    assert by_name["flat"].skipped is not None and "r <= 7" in by_name["flat"].skipped
    assert by_name["flat"].params_after == by_name["flat"].params_before
    assert isinstance(model.flat, nn.Linear) and isinstance(model.nested[0], LowRankLinear)
    with torch.no_grad():
        assert torch.allclose(model.nested[0](x), expected, atol=0.01 * float(expected.abs().max()))
    with pytest.raises(ValueError, match="not an nn.Linear"):
        factorise_linears(model, {"nested.1": 1})
    with pytest.raises(ValueError, match="no submodule named 'missing'"):
        factorise_linears(model, {"missing": 1})


def gated_full_rank(seed: int, init_keep_prob: float = 0.99) -> tuple[nn.Linear, LowRankLinear]:
    torch.manual_seed(seed)
    linear = nn.Linear(6, 5).double()
    layer = LowRankLinear.from_linear(linear, rank=5, allow_no_saving=True)
    add_rank_gate(layer, init_keep_prob=init_keep_prob, seed=seed)
    layer.double()
    return linear, layer


def set_hard_mask(layer: LowRankLinear, keep: list[int]) -> None:
    with torch.no_grad():
        layer.gate.log_alpha.fill_(-20.0)
        layer.gate.log_alpha[keep] = 20.0
    layer.eval()
    assert layer.gate().tolist() == [1.0 if i in keep else 0.0 for i in range(layer.rank)]


def test_gated_low_rank_with_hard_mask_equals_truncation():
    linear, layer = gated_full_rank(seed=0)
    set_hard_mask(layer, keep=[0, 1])
    truncated = LowRankLinear.from_linear(linear, rank=2)
    x = torch.randn(4, 6, dtype=torch.float64)
    assert torch.allclose(layer(x), truncated(x), atol=1e-12)
    set_hard_mask(layer, keep=[1, 3])  # any subset: the kept components only
    a, b = truncated_svd(linear.weight, 5)
    manual = x @ (a[:, [1, 3]] @ b[[1, 3]]).T + linear.bias
    assert torch.allclose(layer(x), manual, atol=1e-12)


def test_expected_params_of_a_gated_layer():
    _, layer = gated_full_rank(seed=1)
    probs = layer.gate.prob_nonzero().detach()
    assert float(layer.expected_num_params().detach()) == pytest.approx(float(probs.sum()) * (6 + 5) + 5)
    layer.expected_num_params().backward()
    assert torch.allclose(layer.gate.log_alpha.grad, (probs * (1 - probs)) * 11)
    plain = LowRankLinear(6, 5, rank=2)
    assert float(plain.expected_num_params()) == sum(p.numel() for p in plain.parameters())


def test_rank_gate_samples_in_training_and_gets_gradients():
    _, layer = gated_full_rank(seed=2, init_keep_prob=0.5)
    layer.train()
    x = torch.randn(4, 6, dtype=torch.float64)
    assert not torch.equal(layer(x), layer(x))
    layer(x).pow(2).sum().backward()
    assert layer.gate.log_alpha.grad.abs().sum() > 0


def test_the_export_form_carries_the_bias_in_the_rank_and_computes_the_same_map(monkeypatch):
    layer = LowRankLinear(6, 5, rank=2)
    with torch.no_grad():
        layer.second.bias.uniform_(-1.0, 1.0)
    x = torch.randn(3, 4, 6)
    with torch.inference_mode():
        eager = layer(x)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        exported = layer(x)
    assert torch.allclose(exported, eager, atol=1e-6)
    assert not torch.allclose(eager, layer.second(layer.first(x)) - layer.second.bias, atol=1e-3)  # the bias counts
