"""Optimizer groups for pruning with gates: the gates' log α and the Lagrange multipliers."""

from __future__ import annotations

from kdlab.compress.lagrangian import SparsityController, lagrangian_param_group
from kdlab.compress.structures import GateSet
from kdlab.train.trainer import resolve_device


def sparsity_param_groups(
    gates: GateSet, target_sparsity: float, warmup_steps: int, gate_lr: float, lagrangian_lr: float, device: str
) -> tuple[SparsityController | None, list[dict]]:
    """The controller and the trainer's extra groups; `(None, [])` when there are no gates.

    Both groups keep a constant learning rate (`scheduled: False`) and no weight decay; the
    controller's λ climb (gradient ascent, see `kdlab.compress.lagrangian`). Pass the
    controller to the trainer's `modules=` so checkpoints hold λ.
    """
    if not len(gates):
        return None, []
    controller = SparsityController(target_sparsity, warmup_steps).to(resolve_device(device))
    groups = [
        {"params": list(gates.parameters()), "lr": gate_lr, "weight_decay": 0.0, "scheduled": False, "name": "gates"},
        {**lagrangian_param_group(controller, lagrangian_lr), "scheduled": False, "name": "lagrangian"},
    ]
    return controller, groups
