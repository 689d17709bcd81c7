"""What a compression run records in its history ("record" records), in the shape the figures read
(``kdlab.viz.compression_history``):

    {"kind": "record", "step": 120,
     "target_sparsity": 0.31,          # t(step) of the Lagrangian ramp (the fixed sparsity without gates)
     "expected_sparsity": 0.29,        # ŝ = 1 − E[params] / params₀ (params₀ = the teacher's count)
     "materialised_sparsity": 0.27,    # what materialising now would give (deterministic masks)
     "lambda1": 0.8, "lambda2": 0.1,   # Lagrange multipliers (only with gates)
     "gates": {"blocks.0.attn": [...], ...},   # P(z ≠ 0) per unit, lists of GateSet.probabilities() shapes
     "ranks": {"blocks.0.attn.q_proj": 37.5}}  # expected rank per low-rank matrix (Σ P(z ≠ 0), or its rank)

Loss parts (``loss_distill``, ``loss_penalty``) are in the trainer's "train" records. Values are
rounded to ``DIGITS`` decimals to keep ``history.json`` compact.
"""

from __future__ import annotations

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lagrangian import SparsityController, expected_sparsity
from kdlab.compress.lowrank import LowRankLinear
from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import GateSet
from kdlab.models.conformer import ConformerEncoder

DIGITS = 4


def expected_ranks(encoder: ConformerEncoder) -> dict[str, float]:
    """Dotted name -> expected rank of every ``LowRankLinear``: Σ P(z ≠ 0) of its rank gate, or its rank."""
    ranks = {}
    for name, module in encoder.named_modules():
        if isinstance(module, LowRankLinear):
            gate = module.gate
            rank = float(gate.prob_nonzero().sum()) if isinstance(gate, HardConcreteGate) else float(module.rank)
            ranks[name] = round(rank, DIGITS)
    return ranks


def compression_record(
    encoder: ConformerEncoder,
    gates: GateSet,
    teacher_params: int,
    controller: SparsityController | None,
    step: int,
    target: float,
) -> dict:
    """One history record (see the module docstring); ``target`` is used when there is no controller."""
    expected = expected_sparsity(expected_params(encoder), teacher_params)
    materialised = expected_sparsity(expected_params(encoder, deterministic=True), teacher_params)
    record = {
        "target_sparsity": target,
        "expected_sparsity": round(float(expected), DIGITS),
        "materialised_sparsity": round(float(materialised), DIGITS),
    }
    if controller is not None:
        values = controller.log_values(expected, step)
        record.update(target_sparsity=values["target_sparsity"], lambda1=values["lambda_1"], lambda2=values["lambda_2"])
    if len(gates):
        record["gates"] = {
            name: [round(p, DIGITS) for p in probs.tolist()] for name, probs in gates.probabilities().items()
        }
    ranks = expected_ranks(encoder)
    if ranks:
        record["ranks"] = ranks
    return record
