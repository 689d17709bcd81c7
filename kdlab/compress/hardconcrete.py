"""Hard-concrete gates: differentiable L0 masks (Louizos, Welling & Kingma, 2018).

A gate vector of `n` units has one parameter per unit, `log_alpha` (log α). A *sample* is

    u ~ U(eps, 1 - eps)
    s = σ((log u − log(1 − u) + log α) / β)          binary concrete in (0, 1)
    z = clamp(s · (ζ − γ) + γ, 0, 1)                  stretched to (γ, ζ) ⊃ [0, 1], then clipped

with temperature β = 2/3 and stretch γ = −0.1, ζ = 1.1. The stretch-and-clip puts real
probability mass on *exactly* 0 (unit removed) and *exactly* 1 (unit fully kept), while z stays
differentiable in log α wherever 0 < z < 1 (reparameterisation: the noise u carries the
randomness). The closed forms used here (L is a standard logistic variable, logit(u)):

    P(z ≠ 0) = σ(log α − β · log(−γ / ζ))              the expected L0 "norm" per unit
    P(z = 1) = σ(log α − β · log((1 − γ) / (ζ − 1)))
    P(z > ½) = P(s > ½) = σ(log α)

`P(z ≠ 0)` is differentiable in log α, so the expected number of kept units (and any parameter
count that is linear in it) can be penalised or constrained directly.

At evaluation time the mask is deterministic (the Louizos et al. test-time estimator):

    ẑ = clamp(σ(log α) · (ζ − γ) + γ, 0, 1)

It can be soft (0 < ẑ < 1; materialisation folds such values into the next layer) and is
exactly 0 when σ(log α) ≤ −γ / (ζ − γ) (= 1/12 with the defaults) and exactly 1 when
σ(log α) ≥ (1 − γ) / (ζ − γ) (= 11/12).

Initialisation (DPHuBERT's convention, which states it as an initial drop rate 1 − p):
`init_keep_prob = p` sets log α = log(p / (1 − p)), i.e.
p = σ(log α) = P(z > ½), the probability that a sampled gate is more open than closed. The
probability of being non-zero at all is higher, P(z ≠ 0) = σ(logit(p) + β·log(ζ / −γ))
(≈ 0.832 for p = 0.5, ≈ 0.998 for p = 0.99), and the deterministic mask is
ẑ = clamp(p·(ζ − γ) + γ, 0, 1) (exactly 1 for p = 0.99, 0.5 for p = 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def hard_concrete_sample(
    log_alpha: torch.Tensor, u: torch.Tensor, beta: float, gamma: float, zeta: float
) -> torch.Tensor:
    """Hard-concrete sample z from uniform noise `u` (same shape as, or broadcastable to, log α).

    z = clamp(σ((log u − log(1 − u) + log α) / β) · (ζ − γ) + γ, 0, 1). Differentiable in log α.
    """
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return torch.clamp(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_prob_nonzero(log_alpha: torch.Tensor, beta: float, gamma: float, zeta: float) -> torch.Tensor:
    """P(z ≠ 0) = σ(log α − β · log(−γ / ζ)), elementwise; differentiable in log α."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def hard_concrete_prob_one(log_alpha: torch.Tensor, beta: float, gamma: float, zeta: float) -> torch.Tensor:
    """P(z = 1) = σ(log α − β · log((1 − γ) / (ζ − 1))), elementwise."""
    return torch.sigmoid(log_alpha - beta * math.log((1.0 - gamma) / (zeta - 1.0)))


def hard_concrete_deterministic(log_alpha: torch.Tensor, gamma: float, zeta: float) -> torch.Tensor:
    """Test-time mask ẑ = clamp(σ(log α) · (ζ − γ) + γ, 0, 1), elementwise."""
    return torch.clamp(torch.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


class HardConcreteGate(nn.Module):
    """A vector of `n` hard-concrete gates; `forward()` returns the mask `(n,)`.

    Training mode: a fresh sample per call (`sample()`). Eval mode: `deterministic_mask()`.

    Args:
        n: number of gated units (heads, channels, rank components, ...).
        init_keep_prob: p in (0, 1); log α starts at logit(p), so P(z > ½) = p at init
            (see the module docstring for what that implies for P(z ≠ 0)).
        beta: temperature β > 0 (smaller = closer to a Bernoulli).
        gamma, zeta: stretch interval (γ < 0, ζ > 1).
        eps: the uniform noise is drawn from U(eps, 1 − eps) to keep log u finite.
        seed: if given, samples come from this gate's own `torch.Generator` seeded with it
            (created on the parameter's device at the first sample, and created and seeded
            afresh if the parameter later moves to another device); otherwise from torch's
            global RNG (seed that with `torch.manual_seed`). The generator's state is saved in
            `state_dict()` (as extra state), so a resumed run draws the same noise.
    """

    def __init__(
        self,
        n: int,
        init_keep_prob: float = 0.99,
        beta: float = 2.0 / 3.0,
        gamma: float = -0.1,
        zeta: float = 1.1,
        eps: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of gates) must be a positive int, got {n!r}")
        if not 0.0 < init_keep_prob < 1.0:
            raise ValueError(f"init_keep_prob must be in (0, 1), got {init_keep_prob}")
        if beta <= 0.0:
            raise ValueError(f"beta (temperature) must be > 0, got {beta}")
        if not (gamma < 0.0 and zeta > 1.0):
            raise ValueError(f"the stretch needs gamma < 0 and zeta > 1, got gamma={gamma}, zeta={zeta}")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        self.n = n
        self.init_keep_prob = init_keep_prob
        self.beta = beta
        self.gamma = gamma
        self.zeta = zeta
        self.eps = eps
        self.seed = seed
        self._generator: torch.Generator | None = None
        init = math.log(init_keep_prob / (1.0 - init_keep_prob))
        self.log_alpha = nn.Parameter(torch.full((n,), init))

    def forward(self) -> torch.Tensor:
        """Mask `(n,)`: a differentiable sample in training mode, `deterministic_mask()` in eval."""
        if self.training:
            return self.sample()
        return self.deterministic_mask()

    def _own_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        device = self.log_alpha.device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def get_extra_state(self) -> torch.Tensor:
        """The own generator's state as a uint8 tensor (empty before the first seeded sample)."""
        if self._generator is None:
            return torch.empty(0, dtype=torch.uint8)
        return self._generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        if state.numel() and self.seed is not None:
            self._own_generator().set_state(state.cpu())
        else:
            self._generator = None

    def sample(self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw hard-concrete samples of shape `sample_shape + (n,)`, differentiable in log α.

        `generator` overrides the gate's own (seeded) generator for this call; it must live on
        the parameter's device.
        """
        generator = generator if generator is not None else self._own_generator()
        shape = tuple(sample_shape) + (self.n,)
        u = torch.rand(shape, generator=generator, device=self.log_alpha.device, dtype=self.log_alpha.dtype)
        u = u * (1.0 - 2.0 * self.eps) + self.eps
        return hard_concrete_sample(self.log_alpha, u, self.beta, self.gamma, self.zeta)

    def prob_nonzero(self) -> torch.Tensor:
        """P(z ≠ 0) per unit `(n,)`: the expected L0, differentiable in log α."""
        return hard_concrete_prob_nonzero(self.log_alpha, self.beta, self.gamma, self.zeta)

    def prob_one(self) -> torch.Tensor:
        """P(z = 1) per unit `(n,)`: the mass of fully-open samples."""
        return hard_concrete_prob_one(self.log_alpha, self.beta, self.gamma, self.zeta)

    def expected_num_nonzero(self) -> torch.Tensor:
        """E[#units with z ≠ 0] = Σ P(z ≠ 0), a differentiable scalar."""
        return self.prob_nonzero().sum()

    def deterministic_mask(self) -> torch.Tensor:
        """Eval mask `(n,)`: clamp(σ(log α)·(ζ − γ) + γ, 0, 1); soft values and exact 0/1 possible."""
        return hard_concrete_deterministic(self.log_alpha, self.gamma, self.zeta)

    @torch.no_grad()
    def hard_mask(self, threshold: float = 0.5) -> torch.Tensor:
        """Binary mask `(n,)` (values 0.0 / 1.0, no gradient): 1 where `deterministic_mask() > threshold`."""
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        return (self.deterministic_mask() > threshold).to(self.log_alpha.dtype)

    def extra_repr(self) -> str:
        return (
            f"n={self.n}, init_keep_prob={self.init_keep_prob}, beta={self.beta:.4g}, "
            f"gamma={self.gamma}, zeta={self.zeta}, seed={self.seed}"
        )
