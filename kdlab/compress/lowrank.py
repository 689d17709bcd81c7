"""Low-rank factorisation (LRF) of linear layers, and how to choose the ranks.

A weight W (m × n) — `nn.Linear(n, m).weight`, so m = out_features, n = in_features — with
singular value decomposition W = U S Vᵀ (σ₁ ≥ σ₂ ≥ …) is replaced by two factors

    A = U_r √S_r  (m × r),   B = √S_r V_rᵀ  (r × n),   W ≈ A B

(√S split into both, so A and B have the same scale and train well together). By the
Eckart–Young theorem this is the best rank-r approximation, with Frobenius error

    ‖W − A B‖_F = sqrt(Σ_{i > r} σ_i²)

**Break-even rule.** The factors hold r·(m + n) numbers against m·n for W (a bias is the same in
both and does not enter), so the factorisation saves parameters only when

    r < m·n / (m + n)        — the largest such r is `break_even_rank(m, n)`.

For a square 256 × 256 matrix that is r ≤ 127: rank 128 already costs as much as the dense
matrix. `LowRankLinear` refuses a rank that does not save (unless `allow_no_saving=True`) and
`factorise_linears` / `ranks_by_global_budget` keep such matrices dense and say so.

**Speed rule.** On a CPU two thin products run slower per MAC than one (two calls, less work per
memory access), so a factorisation that saves little costs time (measured per layer shape and
rank: docs/deployment_speed.md). A factorised layer is therefore kept only where its factors cost
at most ⅔ of the dense MACs, r·(m + n) ≤ ⅔·m·n (`factors_are_faster`, the largest such r is
`fast_rank`); `ranks_by_global_budget` plans dense matrices past it, and materialisation
stores such a layer dense. Measured in ONNX Runtime with the exported layout (the bias carried in
the rank, `LowRankLinear._bias_in_rank`), pairs at that limit still run 1.2–1.9× faster than the
dense layer, so the rule is not the cause of slow factorised encoders.

**Choosing ranks.** Per matrix, `rank_by_energy` keeps the smallest r whose components hold a
fraction `energy` of Σσ². Across matrices, `ranks_by_global_budget` spends one parameter budget
greedily on the components with the most *relative* energy per parameter (see there).

**LRF + L0.** `LowRankLinear.gate` (default `None`, the kit's prunable-place contract) can hold a
mask module over the r components, applied between the two factors:
y = A (g ⊙ (B x)) + bias. With a `HardConcreteGate` (`add_rank_gate`) the L0 penalty chooses
the rank during training; the expected parameter count is E[#kept components]·(m + n) (+ bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.compress.hardconcrete import HardConcreteGate


def break_even_rank(m: int, n: int) -> int:
    """Largest r with r·(m + n) < m·n, i.e. the largest rank that still saves parameters (may be 0)."""
    if m < 1 or n < 1:
        raise ValueError(f"matrix dimensions must be >= 1, got {m} x {n}")
    return (m * n - 1) // (m + n)


def factors_are_faster(rank, m, n):
    """True where rank-r factors of an m × n matrix cost at most ⅔ of its MACs: 3·r·(m + n) ≤ 2·m·n.

    Works on ints and on tensors (expected ranks); see the module docstring's speed rule.
    """
    return 3 * rank * (m + n) <= 2 * m * n


def fast_rank(m: int, n: int) -> int:
    """Largest r for which `factors_are_faster(r, m, n)` (0 when none is; always < break-even)."""
    if m < 1 or n < 1:
        raise ValueError(f"matrix dimensions must be >= 1, got {m} x {n}")
    return (2 * m * n) // (3 * (m + n))


def _break_even_message(m: int, n: int, rank: int) -> str:
    return (
        f"rank {rank} does not save parameters for a {m} x {n} matrix: the factors hold "
        f"r*(m+n) = {rank * (m + n)} numbers against m*n = {m * n}. Low rank saves only when "
        f"r < m*n/(m+n) = {m * n / (m + n):.2f}, i.e. r <= {break_even_rank(m, n)} (the break-even rank)"
    )


def _check_rank(rank: int, m: int, n: int) -> None:
    if not isinstance(rank, int) or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an int in [1, min(m, n) = {min(m, n)}] for a {m} x {n} matrix, got {rank!r}")


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values `(min(m, n),)` of `weight (m, n)`, descending, computed in float64."""
    return torch.linalg.svdvals(weight.detach().to(torch.float64))


def truncated_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-r factors of `weight (m, n)`: `A (m, r) = U_r √S_r`, `B (r, n) = √S_r V_rᵀ`.

    The SVD is computed in float64; A and B come back in the weight's dtype and device.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D matrix (m, n), got shape {tuple(weight.shape)}")
    m, n = weight.shape
    _check_rank(rank, m, n)
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = root[:, None] * vh[:rank]
    return a.to(weight.dtype), b.to(weight.dtype)


def reconstruction_error(weight: torch.Tensor, rank: int) -> float:
    """‖W − A B‖_F for the rank-r truncated SVD of `weight (m, n)` (computed in float64)."""
    a, b = truncated_svd(weight.detach().to(torch.float64), rank)
    return float(torch.linalg.matrix_norm(weight.detach().to(torch.float64) - a @ b))


def eckart_young_error(singular_values: torch.Tensor, rank: int) -> float:
    """The optimal rank-r Frobenius error sqrt(Σ_{i > r} σ_i²) from descending `singular_values (k,)`."""
    if not 0 <= rank <= singular_values.numel():
        raise ValueError(f"rank must be in [0, {singular_values.numel()}], got {rank}")
    tail = singular_values.detach().to(torch.float64)[rank:]
    return float(tail.square().sum().sqrt())


def rank_by_energy(singular_values: torch.Tensor, energy: float = 0.9) -> int:
    """Smallest r with Σ_{i ≤ r} σ_i² ≥ energy · Σ_i σ_i² (0 for an all-zero spectrum).

    `energy` in (0, 1]; the kept fraction of ‖W‖_F² is then ≥ `energy`, i.e. the relative
    squared error ‖W − A B‖_F² / ‖W‖_F² ≤ 1 − energy.
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    power = singular_values.detach().to(torch.float64).square()
    total = float(power.sum())
    if total == 0.0:
        return 0
    fraction = power.cumsum(0) / total
    rank = int((fraction < energy - 1e-12).sum()) + 1
    return min(rank, power.numel())


@dataclass
class RankAllocation:
    """Result of `ranks_by_global_budget`.

    `ranks`: name → rank for the matrices to factorise; `dense`: name → reason for matrices kept
    dense; `params`: weight parameters of the plan (Σ r·(m+n) + Σ dense m·n, biases excluded),
    always ≤ `budget`.
    """

    ranks: dict[str, int]
    dense: dict[str, str]
    params: int
    budget: int


def ranks_by_global_budget(
    named_singular_values: dict[str, torch.Tensor],
    shapes: dict[str, tuple[int, int]],
    param_budget: int,
) -> RankAllocation:
    """Spend `param_budget` weight parameters over several matrices, one rank component at a time.

    Scoring (chosen so that matrices of different scale compete fairly): component i of matrix
    k is worth its *relative* energy per parameter,

        score(k, i) = (σ_{k,i}² / Σ_j σ_{k,j}²) / (m_k + n_k),

    the fraction of that matrix's ‖W‖_F² it restores divided by what it costs. Scores fall with i
    inside a matrix, so taking components in descending score order gives each matrix a prefix
    (a rank). Every matrix starts at rank 1 (a rank-0 layer would delete it); the components are
    then taken greedily while they fit the budget. When a matrix would pass its `fast_rank`
    (the speed rule of the module docstring; below the break-even rank), it is made dense instead
    (extra cost m·n − r·(m+n)) and reported in `dense`; matrices whose fast rank is 0 are dense
    from the start.

    Args:
        named_singular_values: name → descending singular values `(min(m, n),)`.
        shapes: name → (m, n) weight shape (out_features, in_features).
        param_budget: total weight parameters allowed for these matrices.
    Raises:
        ValueError if the budget is below the minimum (rank 1 everywhere + the always-dense ones).
    """
    if set(named_singular_values) != set(shapes):
        raise ValueError(
            "named_singular_values and shapes must have the same names; "
            f"only in one of them: {sorted(set(named_singular_values) ^ set(shapes))}"
        )
    ranks: dict[str, int] = {}
    dense: dict[str, str] = {}
    params = 0
    for name, (m, n) in shapes.items():
        if fast_rank(m, n) == 0:
            dense[name] = (
                f"break-even rank of {m} x {n} is 0: no rank saves parameters"
                if break_even_rank(m, n) == 0
                else f"fast rank of {m} x {n} is 0: no rank saves a third of its MACs"
            )
            params += m * n
        else:
            ranks[name] = 1
            params += m + n
    if params > param_budget:
        raise ValueError(
            f"param_budget {param_budget} is below the minimum {params} "
            "(rank 1 for every matrix, dense where no rank saves); raise the budget or factorise fewer matrices"
        )
    candidates = []
    for name, (m, n) in shapes.items():
        if name in dense:
            continue
        power = named_singular_values[name].detach().to(torch.float64).square()
        total = float(power.sum())
        for i in range(1, power.numel()):
            score = float(power[i]) / total / (m + n) if total > 0 else 0.0
            candidates.append((-score, name, i))
    candidates.sort()
    frozen: set[str] = set()
    for _, name, i in candidates:
        if name in frozen or name in dense or ranks[name] != i:
            continue
        m, n = shapes[name]
        if i + 1 <= fast_rank(m, n):
            cost = m + n
            if params + cost > param_budget:
                frozen.add(name)
                continue
            ranks[name] = i + 1
        else:
            cost = m * n - i * (m + n)
            if params + cost > param_budget:
                frozen.add(name)
                continue
            del ranks[name]
            dense[name] = (
                f"the budget reaches the fast rank {fast_rank(m, n)} of {m} x {n} (break-even rank "
                f"{break_even_rank(m, n)}): past it the dense matrix runs faster than two thin products"
            )
        params += cost
    return RankAllocation(ranks=ranks, dense=dense, params=params, budget=param_budget)


class LowRankLinear(nn.Module):
    """y = second(first(x)) with `first: n → r` (no bias, weight B (r, n)) and `second: r → m`
    (weight A (m, r), optional bias): an `nn.Linear(n, m)` whose weight is constrained to A B.

    Input `(..., in_features)`, output `(..., out_features)`. A rank past the break-even rank is
    refused unless `allow_no_saving=True`. `gate` (default `None`): a module whose `forward()`
    returns a `(rank,)` mask applied to the r components between the two factors.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        allow_no_saving: bool = False,
    ) -> None:
        super().__init__()
        _check_rank(rank, out_features, in_features)
        if not allow_no_saving and rank > break_even_rank(out_features, in_features):
            raise ValueError(
                _break_even_message(out_features, in_features, rank)
                + ". Choose a smaller rank, or pass allow_no_saving=True to factorise anyway."
            )
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)
        self.gate: nn.Module | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, allow_no_saving: bool = False) -> LowRankLinear:
        """Factorise `linear` by its rank-r truncated SVD (same device and dtype; bias copied)."""
        weight = linear.weight
        layer = cls(
            linear.in_features, linear.out_features, rank, bias=linear.bias is not None, allow_no_saving=allow_no_saving
        ).to(device=weight.device, dtype=weight.dtype)
        a, b = truncated_svd(weight, rank)
        with torch.no_grad():
            layer.first.weight.copy_(b)
            layer.second.weight.copy_(a)
            if linear.bias is not None:
                layer.second.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None and self.second.bias is not None and torch.compiler.is_exporting():
            return self._bias_in_rank(x)
        h = self.first(x)
        if self.gate is not None:
            h = h * self.gate()
        return self.second(h)

    def _bias_in_rank(self, x: torch.Tensor) -> torch.Tensor:
        """The same map with the bias carried by an extra rank component whose input is the constant 1:
        h = [B; 0] x + e_r (r + 1 wide), y = [A, bias] h. What the exporter gets: ONNX Runtime adds a
        bias to a 3-D MatMul in a separate pass over the wide (..., m) output, which costs about as much
        as the thin product itself; here it is added on the narrow side (docs/deployment_speed.md)."""
        first = F.pad(self.first.weight, (0, 0, 0, 1))  # a zero row
        one = F.pad(self.first.weight.new_ones(1), (self.rank, 0))  # e_r, the last of r + 1
        second = torch.cat((self.second.weight, self.second.bias[:, None]), dim=1)
        return F.linear(F.linear(x, first, one), second)

    def dense_weight(self) -> torch.Tensor:
        """A B `(out_features, in_features)`, without the gate."""
        return self.second.weight @ self.first.weight

    def expected_num_params(self) -> torch.Tensor:
        """Scalar tensor: E[#kept components]·(m + n) (+ m for the bias).

        Without a gate: exactly rank·(m + n) (+ m). With a gate, E[#kept] is
        `gate.expected_num_nonzero()` (a `HardConcreteGate` has it; differentiable), so it can
        feed a sparsity penalty.
        """
        if self.gate is None:
            kept = torch.tensor(float(self.rank), device=self.first.weight.device)
        else:
            kept = self.gate.expected_num_nonzero()
        bias = self.out_features if self.second.bias is not None else 0
        return kept * (self.in_features + self.out_features) + bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def add_rank_gate(layer: LowRankLinear, init_keep_prob: float = 0.99, seed: int | None = None) -> HardConcreteGate:
    """Attach a `HardConcreteGate(layer.rank)` as `layer.gate` and return it.

    The gate takes the layer's device, dtype and train/eval mode (an eval-mode model keeps
    using deterministic masks).
    """
    weight = layer.first.weight
    gate = HardConcreteGate(layer.rank, init_keep_prob=init_keep_prob, seed=seed).to(weight.device, weight.dtype)
    gate.train(layer.training)
    layer.gate = gate
    return gate


def linear_spectra(
    model: nn.Module, names: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """Singular values and weight shapes of the `nn.Linear` submodules of `model`.

    Returns `(named_singular_values, shapes)` ready for `ranks_by_global_budget`; `names`
    restricts to those dotted names (default: every `nn.Linear`).
    """
    if names is None:
        names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    spectra, shapes = {}, {}
    for name in names:
        linear = _get_linear(model, name)
        spectra[name] = singular_values(linear.weight)
        shapes[name] = tuple(linear.weight.shape)
    return spectra, shapes


def _get_linear(model: nn.Module, name: str) -> nn.Linear:
    if not name:
        raise ValueError("give the dotted name of an nn.Linear inside the model, not the model itself ('')")
    try:
        module = model.get_submodule(name)
    except AttributeError as error:
        raise ValueError(f"no submodule named {name!r} in the model ({error})") from None
    if not isinstance(module, nn.Linear):
        raise ValueError(f"{name!r} is a {type(module).__name__}, not an nn.Linear: only nn.Linear can be factorised")
    return module


@dataclass
class FactorisationRecord:
    """One line of the `factorise_linears` report (params include the bias)."""

    name: str
    shape: tuple[int, int]
    rank: int
    params_before: int
    params_after: int
    skipped: str | None


def factorise_linears(model: nn.Module, names_to_ranks: dict[str, int]) -> list[FactorisationRecord]:
    """Replace `nn.Linear` submodules (dotted names) by `LowRankLinear.from_linear`, in place.

    A rank that would not save parameters (past the break-even rank) is not applied: that layer
    stays dense and its record says why in `skipped`. Returns one record per requested name.
    """
    report = []
    for name, rank in names_to_ranks.items():
        linear = _get_linear(model, name)
        m, n = linear.weight.shape
        before = sum(p.numel() for p in linear.parameters())
        _check_rank(rank, m, n)
        if rank > break_even_rank(m, n):
            report.append(FactorisationRecord(name, (m, n), rank, before, before, _break_even_message(m, n, rank)))
            continue
        layer = LowRankLinear.from_linear(linear, rank)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
        after = sum(p.numel() for p in layer.parameters())
        report.append(FactorisationRecord(name, (m, n), rank, before, after, None))
    return report
