"""Lagrangian sparsity control: schedule, gradient ascent on λ, convergence on a toy problem."""

import copy
import json

import pytest
import torch

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lagrangian import (
    LagrangianConfig,
    SparsityController,
    expected_sparsity,
    lagrangian_param_group,
)


def test_target_ramps_linearly_then_stays():
    ctrl = SparsityController(0.6, warmup_steps=10)
    assert [ctrl.target(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.3, 0.6, 0.6])
    assert SparsityController(0.6, warmup_steps=0).target(0) == 0.6


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_target_sparsity_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"target_sparsity must be in \[0, 1\), got " + str(bad)):
        SparsityController(bad)
    with pytest.raises(ValueError, match="target_sparsity must be in"):
        LagrangianConfig(target_sparsity=bad)


def test_penalty_value_and_multipliers_start_at_zero():
    ctrl = SparsityController(0.5)
    assert ctrl.lambda_1.item() == 0.0 and ctrl.lambda_2.item() == 0.0
    with torch.no_grad():
        ctrl.lambda_1.fill_(2.0)
        ctrl.lambda_2.fill_(3.0)
    s = torch.tensor(0.3)
    assert ctrl.penalty(s, step=0).item() == pytest.approx(2.0 * -0.2 + 3.0 * 0.04)


@pytest.mark.parametrize("achieved", [0.3, 0.7])
def test_optimizer_steps_move_lambda_to_increase_the_penalty(achieved):
    ctrl = SparsityController(0.5)
    opt = torch.optim.AdamW([lagrangian_param_group(ctrl, lr=0.1)])
    s = torch.tensor(achieved)
    values = []
    for _ in range(5):
        penalty = ctrl.penalty(s, step=0)
        values.append(penalty.item())
        opt.zero_grad()
        penalty.backward()
        opt.step()
    assert all(b > a for a, b in zip(values, values[1:]))
    # λ1 follows the sign of the violation ŝ − t, λ2 grows
    assert ctrl.lambda_1.item() * (achieved - 0.5) > 0 and ctrl.lambda_2.item() > 0


def test_gradient_reaching_expected_sparsity_is_the_descent_one():
    ctrl = SparsityController(0.5)
    with torch.no_grad():
        ctrl.lambda_1.fill_(2.0)
    s = torch.tensor(0.3, requires_grad=True)
    ctrl.penalty(s, step=0).backward()
    assert float(s.grad) == pytest.approx(2.0)  # ∂/∂ŝ [λ1 (ŝ − t)] = λ1, not negated
    assert ctrl.lambda_1.grad.item() == pytest.approx(0.2)  # −∂/∂λ1 = −(ŝ − t)


def test_ascent_survives_deepcopy():
    ctrl = copy.deepcopy(SparsityController(0.5))
    ctrl.penalty(torch.tensor(0.3), step=0).backward()
    assert ctrl.lambda_1.grad.item() == pytest.approx(0.2)


def test_param_group_has_positive_lr_and_no_weight_decay():
    ctrl = SparsityController(0.5)
    group = lagrangian_param_group(ctrl, lr=0.01)
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.0
    assert {id(p) for p in group["params"]} == {id(ctrl.lambda_1), id(ctrl.lambda_2)}
    with pytest.raises(ValueError, match="lr must be > 0"):
        lagrangian_param_group(ctrl, lr=-0.01)


def test_config_round_trips_through_json():
    config = LagrangianConfig(target_sparsity=0.7, warmup_steps=20, lr=0.02)
    assert LagrangianConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    ctrl = SparsityController.from_config(config)
    assert ctrl.target(10) == pytest.approx(0.35)


def test_toy_gates_reach_target_sparsity():
    """Task loss wants every gate open (more for important units); the Lagrangian wants ŝ = 0.5."""
    n, target = 64, 0.5
    gate = HardConcreteGate(n, init_keep_prob=0.9, seed=0)
    importance = torch.linspace(0.2, 1.0, n)
    ctrl = SparsityController(target, warmup_steps=100)
    opt = torch.optim.AdamW(
        [{"params": gate.parameters(), "weight_decay": 0.0}, lagrangian_param_group(ctrl, lr=0.05)], lr=0.05
    )
    achieved = []
    for step in range(400):
        task = -(importance * gate()).mean()
        s = expected_sparsity(gate.expected_num_nonzero(), n)  # "parameter count" = Σ P(z ≠ 0)
        loss = task + ctrl.penalty(s, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        achieved.append(ctrl.log_values(s, step)["expected_sparsity"])
    assert abs(achieved[-1] - target) < 0.03
    assert max(abs(a - target) for a in achieved[-50:]) < 0.03
    assert ctrl.lambda_1.item() < 0  # the task pulls ŝ below t, so λ1 pushes it up
    gate.eval()
    kept = gate.hard_mask().bool()
    assert importance[kept].mean() > importance[~kept].mean()
