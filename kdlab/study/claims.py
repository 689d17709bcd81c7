"""The paper's claims, computed from the results rows (never asserted), each with a verdict.

Every claim is a function ``fn(rows, target) -> {"holds", "value", "effect", "details"}`` over rows
with ``mode``, ``route``, ``method``, ``target_sparsity``, ``test_wer`` and ``rwer`` (per-seed rows
or the seed means of ``table.summarise``). ``holds`` is the outcome on those rows (None when the grid
lacks the rows it needs; ``details["reason"]`` says which), ``effect`` the number whose sign decides
it (positive = holds). Each row's RWER is against the KD baseline of its own route and mode
(``table.add_rwer``); compression rows are those of both routes, the KD baselines included (RWER 0);
the references (teacher, from scratch) do not compete.

    id                      holds when                                value               effect
    kd_pruning_beats_kd     in every mode, the best KD+pruning row    min over modes of   = value
                            (kd+l0, kd+lrf, kd+lrf+l0, either route)  that best RWER (%)
                            has RWER > 0
    l0_kd_best_offline      offline: kd+l0 (its better route) has a   kd+l0's RWER (%;    RWER margin to the
                            higher RWER than every other method; at   paper: 8.9)         next method
                            least one other than the KD baseline
    lrf_kd_best_streaming   the same for kd+lrf in streaming          kd+lrf's RWER (13.4) the same
    joint_beats_sequential  over the (method, mode) pairs run by both mean (sequential −  = value
                            routes, the KD baselines left out (they   joint) test WER,
                            prune nothing): joint has the lower test  paired per seed
                            WER in more than half, and on average

Differences within ``TIE`` count as ties: a tie never makes a claim hold. ``evaluate_claims``
evaluates each claim on the seed means and on every seed alone (``held_in_seeds``, the per-seed
effects and their sample SD) and gives it a verdict, "held", "not held" or
"undetermined", with its reason (``kdlab.study.verdicts``).
"""

from __future__ import annotations

import statistics

from kdlab.study.checks import run_checks
from kdlab.study.config import BASELINE, MODES, ROUTES
from kdlab.study.table import summarise
from kdlab.study.verdicts import failing_checks, verdict

#: Largest difference (RWER points, or WER) still treated as a tie.
TIE = 1e-9


def _missing(reason: str) -> dict:
    return {"holds": None, "value": None, "effect": None, "details": {"reason": reason}}


def _compressed(rows: list[dict], target: float, mode: str) -> list[dict]:
    return [
        r
        for r in rows
        if r["route"] in ROUTES and r["target_sparsity"] == target and r["mode"] == mode and r["rwer"] is not None
    ]


def _label(row: dict) -> str:
    return f"{row['route']} {row['method']}"


def kd_pruning_beats_kd(rows: list[dict], target: float) -> dict:
    """Claim 1 (see the module docstring)."""
    modes = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        combined = [
            r for r in _compressed(rows, target, mode) if r["method"] != BASELINE and "kd" in r["method"].split("+")
        ]
        if combined:
            best = max(combined, key=lambda r: r["rwer"])
            modes[mode] = {"best": _label(best), "rwer": best["rwer"]}
    if not modes:
        return _missing("no KD+pruning row with an RWER in the grid")
    value = min(m["rwer"] for m in modes.values())
    return {"holds": value > TIE, "value": value, "effect": value, "details": {"per_mode": modes}}


def _best_method(rows: list[dict], target: float, mode: str, method: str) -> dict:
    """Claims 2 and 3: is ``method`` (its better route) the best compression row of ``mode``?"""
    best_per_method: dict[str, dict] = {}
    for row in _compressed(rows, target, mode):
        current = best_per_method.get(row["method"])
        if current is None or row["rwer"] > current["rwer"]:
            best_per_method[row["method"]] = row
    if method not in best_per_method:
        return _missing(f"no {mode} {method} row with an RWER in the grid")
    if not set(best_per_method) - {method, BASELINE}:  # beating KD alone is claim 1, not "the best method"
        return _missing(f"no {mode} compression method besides {method} and the KD baseline in the grid")
    ranking = sorted(best_per_method.values(), key=lambda r: -r["rwer"])
    value = best_per_method[method]["rwer"]
    others = [r["rwer"] for m, r in best_per_method.items() if m != method]
    margin = value - max(others) if others else None
    return {
        "holds": margin is not None and margin > TIE,
        "value": value,
        "effect": margin,
        "details": {
            "route": best_per_method[method]["route"],
            "margin_to_next": margin,
            "ranking": [{"method": r["method"], "route": r["route"], "rwer": r["rwer"]} for r in ranking],
        },
    }


def l0_kd_best_offline(rows: list[dict], target: float) -> dict:
    """Claim 2 (see the module docstring)."""
    return _best_method(rows, target, "offline", "kd+l0")


def lrf_kd_best_streaming(rows: list[dict], target: float) -> dict:
    """Claim 3 (see the module docstring)."""
    return _best_method(rows, target, "streaming", "kd+lrf")


def joint_beats_sequential(rows: list[dict], target: float) -> dict:
    """Claim 4 (see the module docstring); ``value`` is a WER difference (fraction). On one seed's
    rows the pairs are that seed's; on the seed means, the mean of the per-seed differences."""
    found = {
        (r["route"], r["method"], r["mode"]): r
        for r in rows
        if r["route"] in ROUTES and r["target_sparsity"] == target and r["method"] != BASELINE
    }
    pairs = []
    for (route, method, mode), joint in found.items():
        sequential = found.get(("sequential", method, mode))
        if route == "joint" and sequential is not None:
            pairs.append(
                {
                    "method": method,
                    "mode": mode,
                    "sequential_wer": sequential["test_wer"],
                    "joint_wer": joint["test_wer"],
                    "delta": sequential["test_wer"] - joint["test_wer"],
                }
            )
    if not pairs:
        return _missing("no compression method was run by both routes")
    wins = sum(p["delta"] > TIE for p in pairs)
    mean_delta = statistics.fmean(p["delta"] for p in pairs)
    return {
        "holds": mean_delta > TIE and wins > len(pairs) / 2,
        "value": mean_delta,
        "effect": mean_delta,
        "details": {"joint_wins": wins, "pairs": len(pairs), "per_pair": pairs},
    }


#: (id, statement, function, unit of ``value`` and ``effect`` ("RWER %" or "WER": a fraction),
#: the paper's number or None, the modes whose rows and checks it rests on (None: every mode)).
CLAIMS = (
    (
        "kd_pruning_beats_kd",
        "Combining KD with structured pruning beats KD alone",
        kd_pruning_beats_kd,
        "RWER %",
        None,
        None,
    ),
    (
        "l0_kd_best_offline",
        "L0+KD is the best method for offline (non-streaming) ASR",
        l0_kd_best_offline,
        "RWER %",
        8.9,
        ("offline",),
    ),
    (
        "lrf_kd_best_streaming",
        "LRF+KD is the best method for streaming ASR",
        lrf_kd_best_streaming,
        "RWER %",
        13.4,
        ("streaming",),
    ),
    (
        "joint_beats_sequential",
        "Pruning jointly with RNN-T training beats pruning first, then fine-tuning",
        joint_beats_sequential,
        "WER",
        None,
        None,
    ),
)


def format_claim_number(unit: str, value: float | None, signed: bool = True) -> str:
    """RWER in %; a WER difference in WER points (×100); "n/a" for None."""
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if unit == "WER":
        return f"{value * 100:{sign}.2f} WER points"
    return f"{value:{sign}.1f} %"


def _std(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.stdev(known) if len(known) > 1 else None


def evaluate_claims(rows: list[dict], checks: dict | None = None) -> list[dict]:
    """Every claim for every target sparsity of ``rows`` (per-seed rows with ``rwer``; ``checks``:
    ``run_checks(rows)`` when None): ``verdict`` and ``reason``, ``value`` / ``effect`` /
    ``details`` on the seed means, ``seeds``, ``held_in_seeds``, the per-seed effects and their
    sample SD ``effect_std`` (None for one seed)."""
    checks = run_checks(rows) if checks is None else checks
    means = summarise(rows)
    seeds = sorted({r["seed"] for r in rows if r["target_sparsity"] is not None})
    targets = sorted({r["target_sparsity"] for r in rows if r["target_sparsity"] is not None})
    present = [m for m in MODES if any(r["mode"] == m for r in rows)]
    out = []
    for target in targets:
        for claim_id, statement, fn, unit, paper, modes in CLAIMS:
            result = fn(means, target)
            per_seed = [fn([r for r in rows if r["seed"] == s], target) for s in seeds]
            effects = [p["effect"] for p in per_seed]
            modes = list(modes or present)
            decision, reason = verdict(
                result["holds"],
                result["effect"],
                _std(effects),
                len(seeds),
                failing_checks(checks, modes, target),
                result["details"].get("reason"),
                lambda number, signed, unit=unit: format_claim_number(unit, number, signed),
            )
            out.append(
                {
                    "id": claim_id,
                    "statement": statement,
                    "target_sparsity": target,
                    "modes": modes,
                    "verdict": decision,
                    "reason": reason,
                    "value": result["value"],
                    "effect": result["effect"],
                    "details": result["details"],
                    "unit": unit,
                    "paper": paper,
                    "seeds": len(seeds),
                    "held_in_seeds": sum(p["holds"] is True for p in per_seed),
                    "effect_per_seed": effects,
                    "effect_std": _std(effects),
                }
            )
    return out
