"""Validity checks of a study (issue 14), computed from the per-seed rows. A claim whose rows fail one
is "undetermined" (``kdlab.study.verdicts``): the grid cannot decide it.

    check                   holds when
    teacher_in_range        each mode's teacher has a test WER in ``TEACHER_WER_RANGE`` (3–20 %)
    students_off_plateau    every model with a budget (students, KD baselines, from scratch) has a
                            test WER ≤ ``PLATEAU_WER`` (50 %): above it an RNN-T model is still on
                            the blank plateau (it emits almost nothing), and WER differences there
                            measure training length, not methods
    kd_baseline_separated   each route's KD baseline (seed mean) has at most ``KD_MAX_TEACHER_RATIO``
                            (2.5) × the teacher's WER, and is worse than the teacher by more than
                            ``SEPARATION_SDS`` (2) of its seed standard deviations; with fewer than
                            ``MIN_SEEDS_FOR_SPREAD`` (3) seeds the spread is unknown and "worse than
                            the teacher" is all that is checked (``spread_known`` False)
    budget                  every model with a budget has an achieved sparsity within
                            ±``BUDGET_TOLERANCE`` (3 points) of its target (``within_budget``)

Each check is ``{"held": True / False / None (nothing to check), "statement", "failures": [...]}``
plus what it measured (``teacher_wers``, ``worst``, ``comparisons``, ``largest_error``);
a failure names its ``mode`` and ``target_sparsity`` (None: the teacher, every target) and says
what is wrong in ``text``, so a claim can pick the failures of its own modes.
"""

from __future__ import annotations

import statistics

from kdlab.study.config import BASELINE, BUDGET_TOLERANCE, ROUTES
from kdlab.study.plan import TEACHER

TEACHER_WER_RANGE = (0.03, 0.20)
PLATEAU_WER = 0.50
KD_MAX_TEACHER_RATIO = 2.5
SEPARATION_SDS = 2.0
MIN_SEEDS_FOR_SPREAD = 3


def is_kd_baseline(row: dict) -> bool:
    """The KD baseline of a route: a dense student of the budget size, distilled (method ``kd``)."""
    return row["method"] == BASELINE and row["route"] in ROUTES


def row_name(row: dict) -> str:
    """ "offline sequential KD baseline", "streaming scratch", "offline joint kd+l0" (no seed)."""
    if is_kd_baseline(row):
        return f"{row['mode']} {row['route']} KD baseline"
    if row["route"] in ROUTES:
        return f"{row['mode']} {row['route']} {row['method']}"
    return f"{row['mode']} {row['method']}"


def _check(statement: str, failures: list[dict], checked: int) -> dict:
    return {"held": None if not checked else not failures, "statement": statement, "failures": failures}


def teacher_in_range(rows: list[dict]) -> dict:
    low, high = TEACHER_WER_RANGE
    teachers = [r for r in rows if r["method"] == TEACHER]
    failures = [
        {
            "mode": r["mode"],
            "target_sparsity": None,
            "test_wer": r["test_wer"],
            "text": f"the {r['mode']} teacher's test WER {r['test_wer']:.1%} is outside {low:.0%}–{high:.0%}",
        }
        for r in teachers
        if not low <= r["test_wer"] <= high
    ]
    return {
        **_check(f"each teacher's test WER is within {low:.0%}–{high:.0%}", failures, len(teachers)),
        "teacher_wers": {r["mode"]: r["test_wer"] for r in teachers},
    }


def students_off_plateau(rows: list[dict]) -> dict:
    budgeted = [r for r in rows if r["target_sparsity"] is not None]
    failures = [
        {
            "mode": r["mode"],
            "target_sparsity": r["target_sparsity"],
            "key": r["key"],
            "test_wer": r["test_wer"],
            "baseline_or_scratch": r["route"] not in ROUTES or is_kd_baseline(r),
            "text": f"{row_name(r)} (seed {r['seed']}) is on the blank plateau: test WER {r['test_wer']:.1%} "
            f"> {PLATEAU_WER:.0%}",
        }
        for r in budgeted
        if r["test_wer"] > PLATEAU_WER
    ]
    worst = max(budgeted, key=lambda r: r["test_wer"], default=None)
    return {
        **_check(
            f"every model with a budget has a test WER ≤ {PLATEAU_WER:.0%} (off the blank plateau)",
            failures,
            len(budgeted),
        ),
        "worst": None if worst is None else {"key": worst["key"], "test_wer": worst["test_wer"]},
    }


def _baseline_comparison(members: list[dict], teacher_wer: float) -> dict:
    """One route/mode/target's KD baseline (its seeds) against the teacher's WER."""
    wers = [r["test_wer"] for r in members]
    mean = statistics.fmean(wers)
    std = statistics.stdev(wers) if len(wers) >= MIN_SEEDS_FOR_SPREAD else None
    margin = mean - teacher_wer
    ratio = mean / teacher_wer if teacher_wer > 0 else None  # a perfect teacher leaves no ratio
    separated = margin > (SEPARATION_SDS * std if std is not None else 0.0)
    first = members[0]
    return {
        "mode": first["mode"],
        "route": first["route"],
        "target_sparsity": first["target_sparsity"],
        "seeds": len(wers),
        "kd_wer": mean,
        "kd_wer_std": std,
        "teacher_wer": teacher_wer,
        "ratio": ratio,
        "spread_known": std is not None,
        "held": ratio is not None and ratio <= KD_MAX_TEACHER_RATIO and separated,
    }


def _separation_text(c: dict) -> str:
    name = f"the {c['mode']} {c['route']} KD baseline at target {c['target_sparsity']:g}"
    if c["ratio"] is None:
        return f"{name} cannot be compared with a teacher whose test WER is 0"
    if c["ratio"] > KD_MAX_TEACHER_RATIO:
        return (
            f"{name} has {c['ratio']:.2f} × the teacher's test WER ({c['kd_wer']:.1%} vs {c['teacher_wer']:.1%}; "
            f"at most {KD_MAX_TEACHER_RATIO:g} ×)"
        )
    if c["spread_known"]:
        return (
            f"{name} is not worse than the teacher by more than {SEPARATION_SDS:g} seed SDs "
            f"({c['kd_wer']:.1%} ± {c['kd_wer_std']:.1%} vs {c['teacher_wer']:.1%})"
        )
    return f"{name} is not worse than the teacher ({c['kd_wer']:.1%} vs {c['teacher_wer']:.1%})"


def kd_baseline_separated(rows: list[dict]) -> dict:
    """Also lists every ``comparisons`` entry (passing or not)."""
    teachers = {r["mode"]: r["test_wer"] for r in rows if r["method"] == TEACHER}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if is_kd_baseline(row) and row["mode"] in teachers:
            groups.setdefault((row["mode"], row["route"], row["target_sparsity"]), []).append(row)
    comparisons = [_baseline_comparison(members, teachers[mode]) for (mode, _, _), members in groups.items()]
    failures = [
        {"mode": c["mode"], "target_sparsity": c["target_sparsity"], "text": _separation_text(c)}
        for c in comparisons
        if not c["held"]
    ]
    check = _check(
        f"each KD baseline has ≤ {KD_MAX_TEACHER_RATIO:g} × the teacher's test WER and is worse than the "
        f"teacher by more than {SEPARATION_SDS:g} seed SDs (with ≥ {MIN_SEEDS_FOR_SPREAD} seeds)",
        failures,
        len(comparisons),
    )
    return {**check, "comparisons": comparisons}


def budget_check(rows: list[dict]) -> dict:
    budgeted = [r for r in rows if r["within_budget"] is not None]
    failures = [
        {
            "mode": r["mode"],
            "target_sparsity": r["target_sparsity"],
            "key": r["key"],
            "achieved_sparsity": r["achieved_sparsity"],
            "text": f"{row_name(r)} (seed {r['seed']}) has sparsity {r['achieved_sparsity']:.3f}, target "
            f"{r['target_sparsity']:g} ± {BUDGET_TOLERANCE:g}",
        }
        for r in budgeted
        if r["within_budget"] is False
    ]
    errors = [abs(r["achieved_sparsity"] - r["target_sparsity"]) for r in budgeted]
    return {
        **_check(
            f"every model's achieved sparsity is within ±{BUDGET_TOLERANCE:g} of its target", failures, len(budgeted)
        ),
        "tolerance": BUDGET_TOLERANCE,
        "largest_error": max(errors, default=None),
    }


#: The checks in the order they are shown.
CHECKS = {
    "teacher_in_range": teacher_in_range,
    "students_off_plateau": students_off_plateau,
    "kd_baseline_separated": kd_baseline_separated,
    "budget": budget_check,
}


def run_checks(rows: list[dict]) -> dict:
    """Every check of ``CHECKS``, by name."""
    return {name: check(rows) for name, check in CHECKS.items()}
