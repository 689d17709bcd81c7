"""The student both compression routes build (``StudentSpec``): method, budget, seed, gates, factors,
shape and initialisation.

``CompressConfig`` (sequential route) and ``JointConfig`` (joint route) are ``StudentSpec``s with
their training settings added, so these fields, their defaults and their checks are written once and
``compress_student.build_student`` reads either config. The fields stay top-level keys of both
configs' JSON (``config.json``, run-folder hashes), as they were before the spec was shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kdlab.compress.methods import METHODS
from kdlab.compress.structures import L0Config
from kdlab.config import JsonConfig

LRF_METHODS = ("budget", "energy")
STUDENT_SHAPES = ("deep", "shallow")
STUDENT_INITS = ("teacher", "random")


def uses_kd(method: str) -> bool:
    """True when every student layer is distilled (the method name contains "kd")."""
    return "kd" in method.split("+")


def uses_gates(method: str) -> bool:
    """True when the method trains hard-concrete gates under the Lagrangian."""
    return "l0" in method.split("+")


def uses_lrf(method: str) -> bool:
    return "lrf" in method.split("+")


@dataclass
class StudentSpec(JsonConfig):
    """The student of a compression run.

    * ``method`` (``METHODS``); ``target_sparsity`` t: fraction of the teacher encoder's parameters
      to remove, in [0, 1); ``seed``: gates' noise and student init (the run's seed).
    * ``l0``: which structures get gates and their initial keep probabilities (its seed is replaced
      by ``seed``); ``ranks`` only matters for kd+lrf+l0.
    * LRF: ``lrf_method`` "budget" (global parameter budget at ``lrf_sparsity``, default: the
      target; for kd+lrf+l0 half the target, the gates remove the rest) or "energy"
      (``lrf_energy`` per matrix).
    * ``student_shape`` (kd): "deep" keeps the depth and narrows heads / FFN / conv, "shallow" keeps
      the widths and drops blocks; ``student_init`` "teacher" (sliced teacher weights) or "random".
    """

    method: str = "kd+l0"
    target_sparsity: float = 0.5
    seed: int = 0
    l0: L0Config = field(default_factory=L0Config)
    lrf_method: str = "budget"
    lrf_energy: float = 0.9
    lrf_sparsity: float | None = None
    student_shape: str = "deep"
    student_init: str = "teacher"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(
                f"target_sparsity must be in [0, 1), got {self.target_sparsity} "
                "(the fraction of the teacher's parameters to remove: 0.5 keeps half)"
            )
        if self.lrf_sparsity is not None and not 0.0 <= self.lrf_sparsity < 1.0:
            raise ValueError(f"lrf_sparsity must be in [0, 1) or None, got {self.lrf_sparsity}")
        if self.lrf_method not in LRF_METHODS:
            raise ValueError(f"lrf_method must be one of {LRF_METHODS}, got {self.lrf_method!r}")
        if not 0.0 < self.lrf_energy <= 1.0:
            raise ValueError(f"lrf_energy must be in (0, 1], got {self.lrf_energy}")
        if self.student_shape not in STUDENT_SHAPES:
            raise ValueError(f"student_shape must be one of {STUDENT_SHAPES}, got {self.student_shape!r}")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init must be 'teacher' or 'random', got {self.student_init!r}")
        self.l0 = replace(self.l0, seed=self.seed)

    def uses_kd(self) -> bool:
        """True when the method distils (its name contains "kd")."""
        return uses_kd(self.method)

    def factorisation_sparsity(self) -> float:
        """Sparsity of the LRF parameter budget (see the class docstring)."""
        if self.lrf_sparsity is not None:
            return self.lrf_sparsity
        return self.target_sparsity / 2 if uses_gates(self.method) else self.target_sparsity
