"""Low-rank factorisation of a conformer encoder's linear layers (in place), with a report.

Which matrices (``include``): ``"attn"`` = q/k/v/out projections, ``"ffn"`` = ``linear1`` and
``linear2`` of both macaron FFNs, ``"conv"`` = the two pointwise layers of the convolution
module. Only ``nn.Linear`` layers are candidates (an already factorised layer is left alone).

How ranks are chosen (``kdlab.compress.lowrank`` has the primitives and the maths):

* ``method="energy"``: per matrix, the smallest rank keeping a fraction ``energy`` of ‖W‖_F²;
* ``method="budget"``: one global budget on the whole encoder's parameter count
  (``param_budget``, e.g. from ``encoder_param_budget(encoder, sparsity)``); the included matrices'
  weights share what is left after every other parameter (biases, norms, subsampling, ...) and the
  components with the most relative energy per parameter are taken first.

Either way the break-even rule r < m·n/(m + n) is enforced: a matrix whose chosen rank would not
save parameters stays dense and the report says why (``report.skipped``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from kdlab.compress.lowrank import (
    FactorisationRecord,
    add_rank_gate,
    factorise_linears,
    linear_spectra,
    rank_by_energy,
    ranks_by_global_budget,
)
from kdlab.compress.structures import gate_seed
from kdlab.models.conformer import ConformerEncoder

#: Linear layers of each includable part, relative to a ``ConformerBlock``.
LINEARS = {
    "attn": ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj"),
    "ffn": ("ffn1.linear1", "ffn1.linear2", "ffn2.linear1", "ffn2.linear2"),
    "conv": ("conv.pointwise1", "conv.pointwise2"),
}
METHODS = ("energy", "budget")


@dataclass
class FactorisationReport:
    """What ``factorise_encoder`` did: one ``FactorisationRecord`` per candidate matrix
    (``skipped`` is the reason it stayed dense, else None) and the encoder's parameter count
    (``num_parameters()``, gates excluded) before and after."""

    method: str
    records: list[FactorisationRecord]
    params_before: int
    params_after: int
    energy: float | None = None
    param_budget: int | None = None

    @property
    def ranks(self) -> dict[str, int]:
        """name -> rank of every matrix that was factorised."""
        return {r.name: r.rank for r in self.records if r.skipped is None}

    @property
    def skipped(self) -> dict[str, str]:
        """name -> why that matrix stayed dense."""
        return {r.name: r.skipped for r in self.records if r.skipped is not None}

    def to_dict(self) -> dict:
        return asdict(self)


def encoder_linear_names(encoder: ConformerEncoder, include: tuple[str, ...] = ("attn", "ffn", "conv")) -> list[str]:
    """Dotted names of the ``nn.Linear`` layers of the included parts (absent branches skipped)."""
    unknown = set(include) - set(LINEARS)
    if unknown:
        raise ValueError(f"unknown parts in include: {sorted(unknown)}; choose from {sorted(LINEARS)}")
    names = []
    for i, block in enumerate(encoder.blocks):
        for part in include:
            for relative in LINEARS[part]:
                branch, _, layer = relative.partition(".")
                module = getattr(block, branch)
                if module is not None and type(getattr(module, layer)) is nn.Linear:
                    names.append(f"blocks.{i}.{relative}")
    return names


def encoder_param_budget(encoder: ConformerEncoder, sparsity: float) -> int:
    """Whole-encoder parameter budget for a target sparsity: round((1 − sparsity) · num_parameters())."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity} (the fraction of parameters to remove)")
    return round((1.0 - sparsity) * encoder.num_parameters())


def factorise_encoder(
    encoder: ConformerEncoder,
    method: str = "energy",
    energy: float = 0.9,
    param_budget: int | None = None,
    include: tuple[str, ...] = ("attn", "ffn", "conv"),
    rank_gates: bool = False,
    rank_keep_prob: float = 0.99,
    seed: int = 0,
) -> FactorisationReport:
    """Replace the included linear layers by ``LowRankLinear`` (truncated SVD), in place.

    Args:
        method: "energy" (per matrix) or "budget" (global; needs ``param_budget``).
        energy: fraction of each matrix's squared Frobenius norm to keep (method "energy").
        param_budget: total encoder parameters allowed after factorising (method "budget").
        include: which parts to factorise (see the module docstring).
        rank_gates: also attach a ``HardConcreteGate`` on each new layer's rank components
            (LRF + L0), with ``rank_keep_prob`` and a seed derived from ``seed`` and the layer name.
    Returns:
        a ``FactorisationReport``; with method "budget", ``params_after <= param_budget``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = encoder_linear_names(encoder, include)
    before = encoder.num_parameters()
    spectra, shapes = linear_spectra(encoder, names)
    budget_dense: list[FactorisationRecord] = []
    if method == "energy":
        ranks = {name: max(1, rank_by_energy(spectra[name], energy)) for name in names}
    else:
        if param_budget is None:
            raise ValueError("method='budget' needs param_budget (e.g. encoder_param_budget(encoder, 0.5))")
        weights = sum(m * n for m, n in shapes.values())
        matrix_budget = param_budget - (before - weights)
        try:
            allocation = ranks_by_global_budget(spectra, shapes, matrix_budget)
        except ValueError as error:
            raise ValueError(
                f"param_budget {param_budget} leaves {matrix_budget} parameters for the weights of the "
                f"{len(names)} included matrices after the {before - weights} others: {error}"
            ) from None
        ranks = allocation.ranks
        for name, reason in allocation.dense.items():
            params = sum(p.numel() for p in encoder.get_submodule(name).parameters())
            budget_dense.append(FactorisationRecord(name, shapes[name], min(shapes[name]), params, params, reason))
    records = factorise_linears(encoder, ranks) + budget_dense
    if rank_gates:
        for record in records:
            if record.skipped is None:
                layer = encoder.get_submodule(record.name)
                gate = add_rank_gate(layer, rank_keep_prob, gate_seed(seed, record.name))
                gate.train(encoder.training)  # a freshly built layer is in training mode
    records.sort(key=lambda r: names.index(r.name))
    return FactorisationReport(
        method=method,
        records=records,
        params_before=before,
        params_after=encoder.num_parameters(),
        energy=energy if method == "energy" else None,
        param_budget=param_budget if method == "budget" else None,
    )
