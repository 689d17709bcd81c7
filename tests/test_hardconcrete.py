"""Hard-concrete gates: closed forms against sampling, gradients, eval mask, seeding."""

import math

import pytest
import torch

from kdlab.compress.hardconcrete import HardConcreteGate

# log α values from mostly-closed to mostly-open, so exact 0 and exact 1 both have real mass.
LOG_ALPHAS = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.5, 4.0])


def gate_with(log_alpha: torch.Tensor, seed: int = 0) -> HardConcreteGate:
    gate = HardConcreteGate(log_alpha.numel(), seed=seed)
    with torch.no_grad():
        gate.log_alpha.copy_(log_alpha)
    return gate


def test_empirical_probabilities_match_closed_forms_over_1e5_samples():
    gate = gate_with(LOG_ALPHAS)
    with torch.no_grad():
        z = gate.sample((100_000,))
        assert z.shape == (100_000, LOG_ALPHAS.numel())
        assert (z >= 0).all() and (z <= 1).all()
        assert (z != 0).float().mean(0) == pytest.approx(gate.prob_nonzero().tolist(), abs=0.01)
        assert (z == 1).float().mean(0) == pytest.approx(gate.prob_one().tolist(), abs=0.01)
        # init_keep_prob's documented meaning: P(z > 1/2) = σ(log α)
        assert (z > 0.5).float().mean(0) == pytest.approx(torch.sigmoid(LOG_ALPHAS).tolist(), abs=0.01)
    # both exact ends carry non-zero mass overall, and for the middle gate (log α = 0) by itself
    assert (z == 0).float().mean() > 0.05 and (z == 1).float().mean() > 0.05
    assert (z[:, 2] == 0).any() and (z[:, 2] == 1).any()
    assert ((z[:, 2] > 0) & (z[:, 2] < 1)).any()


def test_prob_nonzero_closed_form_values():
    gate = gate_with(LOG_ALPHAS)
    expected = [1 / (1 + math.exp(-(a - (2 / 3) * math.log(0.1 / 1.1)))) for a in LOG_ALPHAS.tolist()]
    assert gate.prob_nonzero().tolist() == pytest.approx(expected, rel=1e-6)
    assert float(gate.expected_num_nonzero().detach()) == pytest.approx(sum(expected), rel=1e-6)


def test_init_keep_prob_sets_log_alpha_to_logit():
    for p in (0.5, 0.99):
        gate = HardConcreteGate(3, init_keep_prob=p)
        assert torch.allclose(torch.sigmoid(gate.log_alpha), torch.full((3,), p))
    gate = HardConcreteGate(3, init_keep_prob=0.5)
    expected = 1 / (1 + math.exp(-(2 / 3) * math.log(11.0)))  # σ(logit(p) + β·log(ζ/−γ)), p = 1/2
    assert expected == pytest.approx(0.832, abs=1e-3)
    assert torch.allclose(gate.prob_nonzero(), torch.full((3,), expected), atol=1e-6)
    gate.eval()
    assert torch.allclose(gate(), torch.full((3,), 0.5))


def test_gradient_flows_from_sample_and_increases_with_log_alpha():
    gate = gate_with(torch.zeros(4))
    gate.sample((2000,)).mean().backward()
    grad = gate.log_alpha.grad
    assert torch.isfinite(grad).all() and (grad > 0).all()


def test_gradient_of_prob_nonzero_is_analytic():
    gate = gate_with(LOG_ALPHAS)
    gate.prob_nonzero().sum().backward()
    p = gate.prob_nonzero().detach()
    assert torch.allclose(gate.log_alpha.grad, p * (1 - p), atol=1e-7)


def test_eval_mask_is_deterministic_with_exact_zeros_and_ones():
    gate = gate_with(torch.tensor([-5.0, 0.0, 5.0]))
    gate.eval()
    first, second = gate(), gate()
    assert torch.equal(first, second)
    sig = torch.sigmoid(gate.log_alpha.detach())
    assert torch.allclose(first, torch.clamp(sig * 1.2 - 0.1, 0, 1))
    assert first[0] == 0 and first[2] == 1 and 0 < first[1] < 1
    assert gate.hard_mask(0.5).tolist() == [0.0, 0.0, 1.0]
    assert gate.hard_mask(0.4).tolist() == [0.0, 1.0, 1.0]


def test_training_mode_samples_and_seed_reproduces():
    a, b, c = gate_with(torch.zeros(8), seed=3), gate_with(torch.zeros(8), seed=3), gate_with(torch.zeros(8), seed=4)
    za1, za2 = a(), a()
    assert not torch.equal(za1, za2)
    assert torch.equal(za1, b()) and torch.equal(za2, b())
    assert not torch.equal(za1, c())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n (number of gates)"),
        ({"n": 3, "init_keep_prob": 1.0}, "init_keep_prob must be in (0, 1)"),
        ({"n": 3, "beta": 0.0}, "beta"),
        ({"n": 3, "gamma": 0.1}, "gamma < 0"),
    ],
)
def test_invalid_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HardConcreteGate(**kwargs)


def test_seeded_gate_state_dict_resumes_the_noise_stream():
    gate = HardConcreteGate(16, init_keep_prob=0.5, seed=7)
    gate.sample()
    saved = gate.state_dict()
    expected = [gate.sample() for _ in range(3)]
    resumed = HardConcreteGate(16, init_keep_prob=0.5, seed=7)
    resumed.load_state_dict(saved)
    assert all(torch.equal(a, resumed.sample()) for a in expected)
    fresh = HardConcreteGate(16, init_keep_prob=0.5, seed=7)
    assert not torch.equal(fresh.sample(), expected[0])  # without the saved state it would restart
