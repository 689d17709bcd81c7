"""Prune an encoder to a chosen sparsity by ranking its units: what the sparsity slider does.

Every gated unit (head, FFN unit, conv channel, residual branch, rank component) has a score —
by default its gate's P(z ≠ 0), or any ``scores`` the caller gives (e.g. weight magnitudes), as a
dict gate name -> ``(n,)`` tensor with ``GateSet`` names and sizes. Units are removed in ascending
score order (ties: structure order, then gate, then unit index). Removing one more unit never adds
parameters, so the smallest number k of removed units whose materialised encoder has at most
(1 − sparsity)·params₀ parameters is found by bisection on ``expected_params(deterministic=True)``,
which equals the materialised count exactly (``kdlab.compress.param_count``). The achieved
sparsity is therefore ≥ the requested one, and removing k − 1 units would fall short of it.

Gate states: a removed unit's log α is set to ``CLOSED`` (eval mask exactly 0). A kept unit
keeps its trained log α, so its soft eval mask is folded in by ``materialise`` as in the trained
model; a kept unit whose trained mask is 0 (the slider asks for less sparsity than training
reached) is reopened with ``OPEN`` (mask exactly 1). An encoder without gates gets fresh gates
(``attach_gates``), all open. The caller's encoder is never modified (a copy is pruned).
``params₀`` is the caller's encoder's ``num_parameters()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from kdlab.compress.materialise import materialise
from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import KINDS, GateSet, attach_gates
from kdlab.models.conformer import ConformerEncoder

OPEN, CLOSED = 30.0, -30.0


@dataclass(frozen=True)
class Selection:
    """Outcome of ``SparsitySelector.select``: units removed, resulting parameter count and
    sparsity (1 − params / params₀), and whether the requested sparsity could be reached."""

    requested: float
    removed_units: int
    params: int
    sparsity: float
    reached: bool


class SparsitySelector:
    """Removes an encoder's lowest-scoring units until a sparsity is met (see the module docstring).

    Args:
        encoder: a ``ConformerEncoder``, with gates attached (scores default to their P(z ≠ 0))
            or without (then ``scores`` are required and fresh gates are attached to a copy).
        scores: optional gate name -> ``(n,)`` scores; higher = more worth keeping.
    Attributes:
        encoder: the pruned working copy (eval mode); its gates hold the last selection.
        dense_params: params₀.  total_units: units that can be removed.
    """

    def __init__(self, encoder: ConformerEncoder, scores: dict[str, torch.Tensor] | None = None) -> None:
        self.dense_params = encoder.num_parameters()
        self.encoder = copy.deepcopy(encoder).eval()
        gates = GateSet.from_encoder(self.encoder)
        trained = len(gates) > 0
        if not trained:
            if scores is None:
                raise ValueError(
                    "the encoder has no gates: attach_gates(encoder) (and train them), or pass "
                    "scores={gate name: (n,) tensor} to rank its units"
                )
            gates = attach_gates(self.encoder)
        scores = gates.probabilities() if scores is None else scores
        self._check(scores, gates)
        self.gates = gates
        self._base = {}
        for name, gate in gates.gates.items():
            base = gate.log_alpha.detach().clone()
            reopen = gate.deterministic_mask() == 0 if trained else torch.ones_like(base, dtype=torch.bool)
            self._base[name] = torch.where(reopen, OPEN, base)
        self._position = self._removal_positions(scores, gates)
        self.total_units = sum(p.numel() for p in self._position.values())

    @staticmethod
    def _check(scores: dict, gates: GateSet) -> None:
        if set(scores) != set(gates.gates):
            raise ValueError(
                f"scores must name every gate exactly; missing {sorted(set(gates.gates) - set(scores))[:5]}, "
                f"unknown {sorted(set(scores) - set(gates.gates))[:5]}"
            )
        for name, gate in gates.gates.items():
            size = torch.as_tensor(scores[name]).numel()
            if size != gate.n:
                raise ValueError(f"scores[{name!r}] has {size} values, but that gate has {gate.n} units")

    @staticmethod
    def _removal_positions(scores: dict, gates: GateSet) -> dict[str, torch.Tensor]:
        """gate name -> (n,) int64 position of each unit in the removal order."""
        keys = []
        for g, name in enumerate(gates.gates):
            kind = KINDS.index(gates.kinds[name])
            values = torch.as_tensor(scores[name], dtype=torch.float64).reshape(-1).tolist()
            keys += [(value, kind, g, i, name) for i, value in enumerate(values)]
        order = sorted(range(len(keys)), key=lambda j: keys[j][:4])
        positions = {name: torch.empty(gate.n, dtype=torch.int64) for name, gate in gates.gates.items()}
        for position, j in enumerate(order):
            positions[keys[j][4]][keys[j][3]] = position
        return positions

    @torch.no_grad()
    def apply(self, removed: int) -> int:
        """Set the gates so that the first ``removed`` units of the order are removed; returns the
        resulting (materialised) parameter count."""
        for name, gate in self.gates.gates.items():
            base = self._base[name].to(gate.log_alpha)
            gate.log_alpha.copy_(torch.where(self._position[name] < removed, CLOSED, base))
        return int(round(float(expected_params(self.encoder, deterministic=True))))

    def select(self, sparsity: float) -> Selection:
        """Apply the fewest removals reaching ``sparsity`` (all units if it cannot be reached)."""
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity} (the fraction of parameters to remove)")
        target = (1.0 - sparsity) * self.dense_params
        low, high = 0, self.total_units
        if self.apply(high) > target:
            low = high
        while low < high:  # invariant: params(high) <= target
            middle = (low + high) // 2
            if self.apply(middle) <= target:
                high = middle
            else:
                low = middle + 1
        params = self.apply(low)
        return Selection(sparsity, low, params, 1.0 - params / self.dense_params, params <= target)

    def materialise(self, sparsity: float) -> tuple[ConformerEncoder, Selection]:
        """``select(sparsity)``, then the physically smaller encoder (eval mode) and the selection."""
        selection = self.select(sparsity)
        return materialise(self.encoder), selection
