"""The paper's claims, computed from the results rows (never asserted).

Every claim is a function ``fn(rows, target) -> {"held", "value", "details"}`` over rows with
``mode``, ``route``, ``method``, ``target_sparsity``, ``test_wer`` and ``rwer`` (per-seed rows or
the seed means of ``table.summarise``); ``held`` is None when the grid lacks the rows it needs.
Compression rows are the sequential and joint ones (the KD baseline included, RWER 0); the
references (teacher, from scratch) do not compete.

    id                       held when                                                   value
    kd_pruning_beats_kd      in every mode, the best KD+pruning row (kd+l0, kd+lrf,       min over modes of that
                             kd+lrf+l0, either route) has RWER > 0                        best RWER (%)
    l0_kd_best_offline       offline: kd+l0 (its better route) has a higher RWER than     kd+l0's RWER (%;
                             every other method (ties do not hold)                        paper: 8.9)
    lrf_kd_best_streaming    the same for kd+lrf in streaming                             kd+lrf's RWER (%; 13.4)
    joint_beats_sequential   over the (method, mode) pairs run by both routes: joint has  mean (sequential −
                             the lower test WER in more than half, and on average         joint) test WER

Differences within ``TIE`` (float rounding, e.g. of a mean over seeds) count as ties: a tie
never makes a claim hold. ``evaluate_claims`` evaluates each claim on the seed means and on every
seed alone: ``held_in_seeds`` counts the seeds where it held, ``value_std`` is the spread of the per-seed values.
"""

from __future__ import annotations

import statistics

from kdlab.study.config import BASELINE, ROUTES
from kdlab.study.table import summarise

#: Largest difference (RWER points, or WER) still treated as a tie.
TIE = 1e-9


def _compressed(rows: list[dict], target: float, mode: str) -> list[dict]:
    return [r for r in rows if r["route"] in ROUTES and r["target_sparsity"] == target and r["mode"] == mode
            and r["rwer"] is not None]


def _label(row: dict) -> str:
    return f"{row['route']} {row['method']}"


def kd_pruning_beats_kd(rows: list[dict], target: float) -> dict:
    """Claim 1 (see the module docstring)."""
    modes = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        combined = [r for r in _compressed(rows, target, mode) if r["method"] != BASELINE
                    and "kd" in r["method"].split("+")]
        if combined:
            best = max(combined, key=lambda r: r["rwer"])
            modes[mode] = {"best": _label(best), "rwer": best["rwer"]}
    if not modes:
        return {"held": None, "value": None, "details": {"reason": "no KD+pruning row with an RWER in the grid"}}
    value = min(m["rwer"] for m in modes.values())
    return {"held": value > TIE, "value": value, "details": {"per_mode": modes}}


def _best_method(rows: list[dict], target: float, mode: str, method: str) -> dict:
    """Claims 2 and 3: is ``method`` (its better route) the best compression row of ``mode``?"""
    best_per_method: dict[str, dict] = {}
    for row in _compressed(rows, target, mode):
        current = best_per_method.get(row["method"])
        if current is None or row["rwer"] > current["rwer"]:
            best_per_method[row["method"]] = row
    if method not in best_per_method:
        return {"held": None, "value": None, "details": {"reason": f"no {mode} {method} row with an RWER in the grid"}}
    ranking = sorted(best_per_method.values(), key=lambda r: -r["rwer"])
    value = best_per_method[method]["rwer"]
    others = [r["rwer"] for m, r in best_per_method.items() if m != method]
    margin = value - max(others) if others else None
    return {"held": margin is not None and margin > TIE, "value": value,
            "details": {"route": best_per_method[method]["route"], "margin_to_next": margin,
                        "ranking": [{"method": r["method"], "route": r["route"], "rwer": r["rwer"]} for r in ranking]}}


def l0_kd_best_offline(rows: list[dict], target: float) -> dict:
    """Claim 2 (see the module docstring)."""
    return _best_method(rows, target, "offline", "kd+l0")


def lrf_kd_best_streaming(rows: list[dict], target: float) -> dict:
    """Claim 3 (see the module docstring)."""
    return _best_method(rows, target, "streaming", "kd+lrf")


def joint_beats_sequential(rows: list[dict], target: float) -> dict:
    """Claim 4 (see the module docstring); ``value`` is a WER difference (fraction)."""
    found = {(r["route"], r["method"], r["mode"]): r for r in rows
             if r["route"] in ROUTES and r["target_sparsity"] == target}
    pairs = []
    for (route, method, mode), joint in found.items():
        sequential = found.get(("sequential", method, mode))
        if route == "joint" and sequential is not None:
            pairs.append({"method": method, "mode": mode, "sequential_wer": sequential["test_wer"],
                          "joint_wer": joint["test_wer"], "delta": sequential["test_wer"] - joint["test_wer"]})
    if not pairs:
        return {"held": None, "value": None, "details": {"reason": "no method was run by both routes"}}
    wins = sum(p["delta"] > TIE for p in pairs)
    mean_delta = statistics.fmean(p["delta"] for p in pairs)
    return {"held": mean_delta > TIE and wins > len(pairs) / 2, "value": mean_delta,
            "details": {"joint_wins": wins, "pairs": len(pairs), "per_pair": pairs}}


#: (id, statement, function, unit of ``value`` ("RWER %" or "WER": a fraction), the paper's number or None).
CLAIMS = (
    ("kd_pruning_beats_kd", "Combining KD with structured pruning beats KD alone", kd_pruning_beats_kd,
     "RWER %", None),
    ("l0_kd_best_offline", "L0+KD is the best method for offline (non-streaming) ASR", l0_kd_best_offline,
     "RWER %", 8.9),
    ("lrf_kd_best_streaming", "LRF+KD is the best method for streaming ASR", lrf_kd_best_streaming, "RWER %", 13.4),
    ("joint_beats_sequential", "Pruning jointly with RNN-T training beats pruning first, then fine-tuning",
     joint_beats_sequential, "WER", None),
)


def evaluate_claims(rows: list[dict]) -> list[dict]:
    """Every claim for every target sparsity of ``rows`` (per-seed rows with ``rwer``): ``held`` /
    ``value`` / ``details`` on the seed means, plus ``seeds``, ``held_in_seeds`` and the per-seed
    values with their sample std (None for one seed)."""
    means = summarise(rows)
    seeds = sorted({r["seed"] for r in rows if r["target_sparsity"] is not None})
    targets = sorted({r["target_sparsity"] for r in rows if r["target_sparsity"] is not None})
    out = []
    for target in targets:
        for claim_id, statement, fn, unit, paper in CLAIMS:
            result = fn(means, target)
            per_seed = [fn([r for r in rows if r["seed"] == s], target) for s in seeds]
            values = [p["value"] for p in per_seed if p["value"] is not None]
            out.append({"id": claim_id, "statement": statement, "target_sparsity": target, **result, "unit": unit,
                        "paper": paper, "seeds": len(seeds),
                        "held_in_seeds": sum(p["held"] is True for p in per_seed),
                        "value_per_seed": [p["value"] for p in per_seed],
                        "value_std": statistics.stdev(values) if len(values) > 1 else None})
    return out
