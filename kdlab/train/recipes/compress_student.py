"""The student of each compression method, built from the teacher encoder (which is not modified).

* ``kd``: a dense ``ConformerEncoder`` of the budget size (``dense_student_config``), initialised
  from the teacher ("teacher" init: student block i takes the weights of the teacher block it is
  distilled from, ``uniform_layer_map``, sliced to the first heads / FFN units / conv channels)
  or fresh ("random" init, seeded).
* ``l0`` / ``kd+l0``: a copy of the teacher with hard-concrete gates (``attach_gates``).
* ``lrf`` / ``kd+lrf``: a copy factorised by ``factorise_encoder`` (global budget or energy).
* ``kd+lrf+l0``: a copy factorised at ``config.factorisation_sparsity()``, then gates on the
  structures and on the rank components of every low-rank layer.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace

import torch

from kdlab.compress.factorise import encoder_param_budget, factorise_encoder
from kdlab.compress.kd_losses import uniform_layer_map
from kdlab.compress.structures import GateSet, attach_gates
from kdlab.models.conformer import ConformerEncoder
from kdlab.train.recipes.compress_config import dense_student_config
from kdlab.train.recipes.student_spec import StudentSpec, uses_gates, uses_lrf
from kdlab.train.rng import seed_everything

BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


@dataclass
class Student:
    """The encoder to train, its gates (empty without L0) and what was done to build it (JSON-ready)."""

    encoder: ConformerEncoder
    gates: GateSet
    info: dict = field(default_factory=dict)


def _glu_rows(teacher_rows: int, student_rows: int) -> torch.Tensor:
    """Rows of a teacher ``pointwise1`` (value rows 0..C−1, gate rows C..2C−1) kept by a student
    with ``student_rows // 2`` channels: the first channels of both halves."""
    teacher_c, student_c = teacher_rows // 2, student_rows // 2
    return torch.cat([torch.arange(student_c), teacher_c + torch.arange(student_c)])


def init_from_teacher(student: ConformerEncoder, teacher: ConformerEncoder) -> None:
    """Copy the teacher's weights into a smaller dense student of the same ``d_model`` (in place).

    Student block i (1-based) takes teacher block ``uniform_layer_map(L_s, L_t)[i − 1][1]``; every
    tensor is sliced to its leading entries along each dimension (first heads — a head's q/k/v
    rows are contiguous —, first FFN units, first conv channels), except ``pointwise1`` whose GLU
    value and gate halves are sliced separately.
    """
    if student.config.d_model != teacher.config.d_model:
        raise ValueError(
            f"init_from_teacher needs the same d_model, got student {student.config.d_model} "
            f"and teacher {teacher.config.d_model}; use student_init='random'"
        )
    source_block = {i - 1: j - 1 for i, j in uniform_layer_map(student.config.num_layers, teacher.config.num_layers)}
    teacher_state = teacher.state_dict()
    state = {}
    for key, value in student.state_dict().items():
        match = BLOCK_KEY.match(key)
        source = f"blocks.{source_block[int(match.group(1))]}.{match.group(2)}" if match else key
        tensor = teacher_state[source]
        if tensor.dim() and ".conv.pointwise1." in key:
            tensor = tensor[_glu_rows(tensor.shape[0], value.shape[0])]
        state[key] = tensor[tuple(slice(0, n) for n in value.shape)].clone()
    student.load_state_dict(state)


def build_student(config: StudentSpec, teacher: ConformerEncoder) -> Student:
    """The student of ``config.method`` (see the module docstring), in training mode, on the
    teacher's device. ``info`` holds the dense student's config (kd) or the factorisation report."""
    method = config.method
    if method == "kd":
        dense = dense_student_config(teacher.config, config.target_sparsity, config.student_shape)
        seed_everything(config.seed)
        encoder = ConformerEncoder(dense.config).to(next(teacher.parameters()).device)
        if config.student_init == "teacher":
            init_from_teacher(encoder, teacher)
        info = {"student_config": dense.config.to_dict(), "student_sparsity": dense.sparsity}
        return Student(encoder.train(), GateSet({}, {}), info)
    encoder = copy.deepcopy(teacher).train()
    info = {}
    if uses_lrf(method):
        sparsity = config.factorisation_sparsity()
        budget = encoder_param_budget(teacher, sparsity) if config.lrf_method == "budget" else None
        report = factorise_encoder(encoder, config.lrf_method, config.lrf_energy, budget, seed=config.seed)
        info = {"factorisation": report.to_dict(), "factorisation_sparsity": sparsity if budget else None}
    gates = GateSet({}, {})
    if uses_gates(method):
        gates = attach_gates(encoder, replace(config.l0, ranks=uses_lrf(method) and config.l0.ranks))
    return Student(encoder, gates, info)
