"""Sanity checks of a study (issue 5, acceptance 3), computed from the rows:

* ``budget``: every model with a budget (everything but the teacher) has its encoder within
  ±``BUDGET_TOLERANCE`` of (1 − t) × the teacher encoder's parameters (``within_budget``);
* ``kd_worse_than_teacher``: in every mode, target and seed the KD baseline's test WER is higher
  than the teacher's; otherwise the budget is too loose for the comparison to mean anything.

Either may fail at the tiny profile (a few training steps cannot reach a sparsity target); the
study reports it rather than stopping.
"""

from __future__ import annotations

from kdlab.study.config import BASELINE, BUDGET_TOLERANCE
from kdlab.study.plan import TEACHER


def budget_check(rows: list[dict]) -> dict:
    """{"held", "tolerance", "outside": [{"key", "encoder_params", "budget_params", "relative_error"}]}."""
    outside = [{"key": r["key"], "encoder_params": r["encoder_params"], "budget_params": r["budget_params"],
                "relative_error": r["encoder_params"] / r["budget_params"] - 1.0}
               for r in rows if r["within_budget"] is False]
    return {"held": not outside, "tolerance": BUDGET_TOLERANCE, "outside": outside}


def kd_worse_than_teacher(rows: list[dict]) -> dict:
    """{"held", "comparisons": [{"mode", "target_sparsity", "seed", "kd_wer", "teacher_wer", "kd_worse"}]}
    (held is None when the grid has no KD baseline with a teacher of its mode)."""
    teachers = {r["mode"]: r for r in rows if r["method"] == TEACHER}
    comparisons = []
    for row in rows:
        teacher = teachers.get(row["mode"])
        if (row["route"], row["method"]) == ("sequential", BASELINE) and teacher is not None:
            comparisons.append({"mode": row["mode"], "target_sparsity": row["target_sparsity"], "seed": row["seed"],
                                "kd_wer": row["test_wer"], "teacher_wer": teacher["test_wer"],
                                "kd_worse": row["test_wer"] > teacher["test_wer"]})
    held = all(c["kd_worse"] for c in comparisons) if comparisons else None
    return {"held": held, "comparisons": comparisons}


def run_checks(rows: list[dict]) -> dict:
    """Both checks, by name."""
    return {"budget": budget_check(rows), "kd_worse_than_teacher": kd_worse_than_teacher(rows)}
