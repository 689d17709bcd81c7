"""The rows of the study grid, in the order they run.

Each row is one trained ASR model, named by (mode, route, method, target sparsity, seed):

    route        method                       what
    reference    teacher                      the dense SSL-initialised teacher (one per mode, teacher_seed)
    reference    scratch                      dense model of the budget size, random init, the student ASR schedule
    sequential   kd                           the route's baseline: dense budget-size student distilled from
                                              the SSL encoder (compress ``kd``), then the student ASR schedule
    sequential   lrf, l0, kd+lrf, ...         compress the SSL encoder, then the student ASR schedule
    joint        kd                           the route's baseline: dense budget-size student of the SSL encoder
                                              distilled while it trains the student ASR schedule
    joint        lrf, l0, kd+lrf, ...         compress the SSL encoder while it trains the student ASR schedule

Every student row starts from the same SSL encoder with fresh predictor / joiner and gets the
same ASR schedule (docs/study_routes.md); each route has its own KD baseline. Rows of the
sequential route that differ only in mode share one compression run, so the plan keeps them next
to each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdlab.study.config import BASELINE, StudyConfig

REFERENCE = "reference"
TEACHER = "teacher"
SCRATCH = "scratch"


@dataclass(frozen=True)
class RowSpec:
    """One row of the grid; ``target_sparsity`` is None for the teacher (no budget)."""

    mode: str
    route: str
    method: str
    target_sparsity: float | None
    seed: int

    @property
    def key(self) -> str:
        """File-name-safe unique name, e.g. ``offline-joint-kd+l0-0.5-s0``."""
        target = "dense" if self.target_sparsity is None else f"{self.target_sparsity:g}"
        return f"{self.mode}-{self.route}-{self.method}-{target}-s{self.seed}"

    @property
    def is_baseline(self) -> bool:
        """The KD baseline of its route (each route has one)."""
        return self.route != REFERENCE and self.method == BASELINE

    def to_dict(self) -> dict:
        return asdict(self)


def plan_rows(config: StudyConfig) -> list[RowSpec]:
    """Every row of ``config``'s grid: the teachers, then per seed and target the from-scratch
    references and, per route, its KD baseline and each method (sequential rows of both modes
    together, then joint). The sequential KD baseline always runs (the study's checks need one)."""
    rows = [RowSpec(mode, REFERENCE, TEACHER, None, config.teacher_seed) for mode in config.modes]
    for seed in config.seed_list:
        for target in config.target_sparsities:
            rows += [RowSpec(mode, REFERENCE, SCRATCH, target, seed) for mode in config.modes]
            sequential = [BASELINE] + (config.methods if "sequential" in config.routes else [])
            for method in sequential:
                rows += [RowSpec(mode, "sequential", method, target, seed) for mode in config.modes]
            if "joint" in config.routes:
                rows += [
                    RowSpec(mode, "joint", method, target, seed)
                    for method in [BASELINE, *config.methods]
                    for mode in config.modes
                ]
    return rows
