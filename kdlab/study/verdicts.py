"""A claim's verdict: "held", "not held" or "undetermined", with the reason (issue 14).

A claim is **undetermined** when the grid cannot decide it:

* the grid lacks the rows it needs;
* a validity check (``kdlab.study.checks``) fails in the claim's modes at its target: a KD
  baseline or from-scratch model (or any student) on the blank plateau, a teacher outside
  3–20 % WER, a KD baseline not separated from the teacher, a model off its sparsity budget;
* its effect (the number whose sign decides it, see ``kdlab.study.claims``) is within
  ``SPREAD_FACTOR`` (2) × its seed spread (sample SD of the per-seed effects), which needs at
  least ``MIN_SEEDS_FOR_SPREAD`` (3) seeds.

Otherwise it is "held" or "not held" as on the seed means; with fewer than 3 seeds the reason
says that the spread is unknown, with enough seeds it gives effect and spread.
"""

from __future__ import annotations

from collections.abc import Callable

from kdlab.study.checks import MIN_SEEDS_FOR_SPREAD

HELD, NOT_HELD, UNDETERMINED = "held", "not held", "undetermined"
VERDICTS = (HELD, NOT_HELD, UNDETERMINED)
SPREAD_FACTOR = 2.0
#: Failures of one check quoted in a reason; the rest are counted (the checks list them all).
QUOTED_FAILURES = 1


def failing_checks(checks: dict, modes: list[str], target: float) -> list[str]:
    """One sentence per check that fails in ``modes`` at ``target`` (a teacher's failure counts for
    every target), quoting its first failure(s); baseline and from-scratch rows first."""
    sentences = []
    for check in checks.values():
        failures = [f for f in check["failures"] if f["mode"] in modes and f["target_sparsity"] in (None, target)]
        failures.sort(key=lambda f: not f.get("baseline_or_scratch", False))
        if failures:
            more = len(failures) - QUOTED_FAILURES
            quoted = "; ".join(f["text"] for f in failures[:QUOTED_FAILURES])
            sentences.append(quoted + (f" (and {more} more)" if more > 0 else ""))
    return sentences


def verdict(
    holds: bool | None,
    effect: float | None,
    effect_std: float | None,
    seeds: int,
    failures: list[str],
    missing: str | None,
    describe: Callable[[float, bool], str],
) -> tuple[str, str]:
    """(verdict, reason) of a claim whose outcome on the seed means is ``holds`` (None: ``missing``
    says which rows the grid lacks), ``effect`` ± ``effect_std`` over ``seeds`` seeds, in the
    claim's modes with these ``failing_checks``; ``describe(number, signed)`` formats a number in
    the effect's unit."""
    if holds is None:
        return UNDETERMINED, f"the grid lacks rows: {missing}"
    if failures:
        return UNDETERMINED, "a validity check fails: " + "; ".join(failures)
    outcome = HELD if holds else NOT_HELD
    if seeds < MIN_SEEDS_FOR_SPREAD:
        return outcome, (
            f"seed spread unknown ({seeds} seed{'s' * (seeds != 1)}; at least {MIN_SEEDS_FOR_SPREAD} "
            "needed to weigh the effect against it)"
        )
    if effect is None or effect_std is None:
        return outcome, "no effect to weigh against the seed spread (no other method to compare with)"
    spread = f"{SPREAD_FACTOR:g} × its seed SD ({SPREAD_FACTOR:g} × {describe(effect_std, False)})"
    if abs(effect) <= SPREAD_FACTOR * effect_std:
        return UNDETERMINED, f"the effect {describe(effect, True)} is within {spread}"
    return outcome, f"the effect {describe(effect, True)} exceeds {spread}"
