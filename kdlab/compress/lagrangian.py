"""Reaching a target sparsity with a Lagrangian (Wang et al. 2020; CoFi; DPHuBERT).

With ŝ the *expected* sparsity of the gated model,

    ŝ = 1 − E[params] / params₀            (`expected_sparsity`)

and t(step) a target that ramps linearly from 0 to the final target over `warmup_steps`

    t(step) = target · min(1, step / warmup_steps)       (t = target at once if warmup_steps = 0)

the training loss gets the penalty

    penalty = λ1 · (ŝ − t) + λ2 · (ŝ − t)²

The model parameters (weights and gate log α) *minimise* the total loss; the multipliers λ1, λ2
(start at 0) *maximise* it — gradient **ascent**. Ascent makes λ1 grow in the direction of the
violation (∂penalty/∂λ1 = ŝ − t), so the pressure on ŝ keeps increasing until ŝ reaches t,
and λ2 (∂/∂λ2 = (ŝ − t)² ≥ 0) only ever grows, stiffening a quadratic pull towards t.

How ascent is done here: `penalty()` passes λ through a gradient-reversal function (identity
forward, negated gradient backward), so after `loss.backward()` the λ tensors hold −∂loss/∂λ
and an ordinary optimizer with a *positive* learning rate ascends. (A negative learning rate,
DPHuBERT's trick, is rejected by torch's AdamW.) The flip lives inside `penalty()`, so it
survives `copy.deepcopy`, pickling and `load_state_dict`. Give λ its own parameter group with
`lagrangian_param_group(controller, lr)` (no weight decay: decay would pull λ back to 0), and
keep the controller *outside* the model, so that `model.parameters()` does not contain λ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdlab.config import JsonConfig


class _ReverseGradient(torch.autograd.Function):
    """Identity in the forward pass, gradient multiplied by −1 in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def _check_target(target_sparsity: float) -> None:
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(
            f"target_sparsity must be in [0, 1), got {target_sparsity} "
            "(it is the fraction of parameters to remove: 0.5 keeps half the model)"
        )


def _check_warmup(warmup_steps: int) -> None:
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")


def expected_sparsity(expected_params: torch.Tensor, total_params: int) -> torch.Tensor:
    """ŝ = 1 − E[params] / params₀ (differentiable in `expected_params`, a scalar tensor)."""
    if total_params <= 0:
        raise ValueError(f"total_params (params₀ of the unpruned model) must be > 0, got {total_params}")
    return 1.0 - expected_params / total_params


@dataclass
class LagrangianConfig(JsonConfig):
    """Target sparsity, its linear warm-up (in optimizer steps), and the learning rate of λ."""

    target_sparsity: float = 0.5
    warmup_steps: int = 0
    lr: float = 0.01

    def __post_init__(self) -> None:
        _check_target(self.target_sparsity)
        _check_warmup(self.warmup_steps)
        if self.lr <= 0.0:
            raise ValueError(f"lr (learning rate of the multipliers) must be > 0, got {self.lr}")


class SparsityController(nn.Module):
    """Target schedule t(step) and the multipliers λ1, λ2 (`nn.Parameter`s, initialised at 0).

    Args:
        target_sparsity: final fraction of parameters to remove, in [0, 1).
        warmup_steps: steps over which t ramps linearly from 0 to `target_sparsity`.
    """

    def __init__(self, target_sparsity: float, warmup_steps: int = 0) -> None:
        super().__init__()
        _check_target(target_sparsity)
        _check_warmup(warmup_steps)
        self.target_sparsity = target_sparsity
        self.warmup_steps = warmup_steps
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_config(cls, config: LagrangianConfig) -> SparsityController:
        return cls(config.target_sparsity, config.warmup_steps)

    def target(self, step: int) -> float:
        """t(step) = target · min(1, step / warmup_steps); `target_sparsity` when warmup_steps = 0."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.warmup_steps == 0:
            return self.target_sparsity
        return self.target_sparsity * min(1.0, step / self.warmup_steps)

    def penalty(self, expected_sparsity: torch.Tensor, step: int) -> torch.Tensor:
        """λ1·(ŝ − t) + λ2·(ŝ − t)², a scalar; λ receives the *negated* gradient (ascent).

        `expected_sparsity` ŝ is a scalar tensor that depends on the gates (see
        `expected_sparsity()`); the gradient reaching it is the ordinary (descent) one.
        """
        gap = expected_sparsity - self.target(step)
        lambda_1 = _ReverseGradient.apply(self.lambda_1)
        lambda_2 = _ReverseGradient.apply(self.lambda_2)
        return lambda_1 * gap + lambda_2 * gap * gap

    def log_values(self, expected_sparsity: torch.Tensor | float, step: int) -> dict[str, float]:
        """Plain floats to record every step: target, expected (achieved) sparsity, λ1, λ2."""
        return {
            "target_sparsity": self.target(step),
            "expected_sparsity": float(torch.as_tensor(expected_sparsity).detach()),
            "lambda_1": float(self.lambda_1.detach()),
            "lambda_2": float(self.lambda_2.detach()),
        }

    def extra_repr(self) -> str:
        return f"target_sparsity={self.target_sparsity}, warmup_steps={self.warmup_steps}"


def lagrangian_param_group(controller: SparsityController, lr: float) -> dict:
    """Optimizer parameter group for λ1, λ2: positive `lr`, no weight decay.

    Use it beside the model's groups, e.g.
    `torch.optim.AdamW([{"params": model.parameters()}, lagrangian_param_group(ctrl, 0.01)], lr=1e-3)`.
    Ascent comes from the gradient reversal inside `SparsityController.penalty`.
    """
    if lr <= 0.0:
        raise ValueError(
            f"lr must be > 0, got {lr}: the ascent comes from the negated gradient, not from a negative lr"
        )
    return {"params": [controller.lambda_1, controller.lambda_2], "lr": lr, "weight_decay": 0.0}
