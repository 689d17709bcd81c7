"""Put a gated encoder exactly on its parameter budget before it is materialised.

The Lagrangian drives the *expected* sparsity ŝ towards the target t, but a short run may end
before it settles (the gates respond tens of steps after λ moves, so ŝ lags the ramp of t and
then overshoots). Comparing methods at one budget needs the materialised models to have that
budget, so ``calibrate_to_budget`` adds one constant c to every gate's log α:

    count(c) = #parameters of materialise(encoder) with log α + c     (non-decreasing in c)

and picks the c whose count is closest to ``budget_params`` (bisection between ±``max_shift``).
One shift for all gates keeps the gates' own ranking of the units (larger log α: kept first), as
CoFi's deterministic masks do; units flip on or off one at a time, so the count can land on the
budget within the size of one unit (a head, an FFN unit, a channel or a rank component), unless
only whole-block gates are left to flip. A small c barely changes the kept units' masks; a large
one (a run far from its target) changes them, which the fine-tuning that follows absorbs.
"""

from __future__ import annotations

import torch

from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import GateSet
from kdlab.models.conformer import ConformerEncoder


@torch.no_grad()
def _set_shift(gates: GateSet, originals: list[torch.Tensor], shift: float) -> None:
    for p, original in zip(gates.parameters(), originals):
        p.copy_(original + shift)


@torch.no_grad()
def shift_gates(gates: GateSet, shift: float) -> None:
    """Add ``shift`` to every log α of ``gates`` in place (e.g. a stored calibration, on gates
    rebuilt from a checkpoint taken before it)."""
    _set_shift(gates, [p.detach().clone() for p in gates.parameters()], shift)


def calibrate_if_gated(
    enabled: bool, encoder: ConformerEncoder, gates: GateSet, target_sparsity: float, teacher_params: int
) -> dict | None:
    """``calibrate_to_budget`` onto (1 − ``target_sparsity``) · ``teacher_params`` when ``enabled``
    and the encoder has gates, else None (the recipes' ``calibrate_budget`` step)."""
    if not enabled or not len(gates):
        return None
    return calibrate_to_budget(encoder, gates, (1 - target_sparsity) * teacher_params)


@torch.no_grad()
def calibrate_to_budget(
    encoder: ConformerEncoder, gates: GateSet, budget_params: float, max_shift: float = 30.0, iterations: int = 60
) -> dict:
    """Shift every log α of ``gates`` (living in ``encoder``) in place so the materialised
    parameter count is the closest reachable to ``budget_params``; returns ``{"shift", "params_before",
    "params_after"}`` (counts as floats). ValueError when there are no gates or the budget is not positive."""
    if not len(gates):
        raise ValueError("calibrate_to_budget needs a gated encoder (the method has no L0 gates)")
    if not budget_params > 0:
        raise ValueError(f"budget_params must be > 0, got {budget_params}")
    originals = [p.detach().clone() for p in gates.parameters()]

    def count(shift: float) -> float:
        _set_shift(gates, originals, shift)
        return float(expected_params(encoder, deterministic=True))

    before = count(0.0)
    low, high = -max_shift, max_shift  # count(low) <= count(high)
    if count(low) >= budget_params:
        best = low
    elif count(high) <= budget_params:
        best = high
    else:  # invariant: count(low) < budget <= count(high)
        for _ in range(iterations):
            middle = 0.5 * (low + high)
            if count(middle) < budget_params:
                low = middle
            else:
                high = middle
        best = min((low, high), key=lambda c: abs(count(c) - budget_params))
    _set_shift(gates, originals, best)
    return {"shift": best, "params_before": before, "params_after": float(expected_params(encoder, deterministic=True))}
