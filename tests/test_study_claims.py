"""The study's evaluation on synthetic rows (no training): RWER against the KD baseline of the row's
own route and mode, the paper's claims with their verdicts ("held", "not held", "undetermined" and
why), the validity checks, the seed summary and the Markdown tables (issue 14)."""

from __future__ import annotations

import statistics

import pytest

from kdlab.eval.wer import relative_wer
from kdlab.study.checks import run_checks
from kdlab.study.claims import (
    evaluate_claims,
    joint_beats_sequential,
    kd_pruning_beats_kd,
    l0_kd_best_offline,
    lrf_kd_best_streaming,
)
from kdlab.study.config import METHODS, MODES, ROUTES
from kdlab.study.report import checks_table, claims_table, results_table
from kdlab.study.table import add_rwer, summarise

TARGET = 0.75
TEACHER_WER, KD_WER, SCRATCH_WER = 0.10, 0.20, 0.30


def _row(mode, route, method, seed, wer, target=TARGET, sparsity=None) -> dict:
    sparsity = target if sparsity is None else sparsity
    return {
        "key": f"{mode}-{route}-{method}-s{seed}",
        "mode": mode,
        "route": route,
        "method": method,
        "target_sparsity": target,
        "seed": seed,
        "test_wer": wer,
        "achieved_sparsity": sparsity,
        "within_budget": None if target is None else abs(sparsity - target) <= 0.03,
        **{k: 1.0 for k in ("encoder_params", "params", "macs_per_second", "latency_ms", "dev_wer")},
    }


def _rows(wers: dict | None = None, seeds=(0,), modes=MODES, teacher_wer=TEACHER_WER, sparsity: dict | None = None):
    """A valid grid: teacher 10 %, each route's KD baseline 20 %, from scratch 30 %, every method 20 %
    unless ``wers[(mode, route, method)]`` says otherwise (a list: one WER per seed)."""
    wers, sparsity = wers or {}, sparsity or {}
    rows = [_row(m, "reference", "teacher", 0, teacher_wer, target=None) for m in modes]
    for seed in seeds:
        for m in modes:
            cells = [("reference", "scratch")] + [(r, x) for r in ROUTES for x in ("kd", *METHODS)]
            for route, method in cells:
                default = SCRATCH_WER if method == "scratch" else KD_WER
                wer = wers.get((m, route, method), default)
                wer = wer[seed] if isinstance(wer, list) else wer
                rows.append(_row(m, route, method, seed, wer, sparsity=sparsity.get((m, route, method))))
    return add_rwer(rows)


def _claims(rows) -> dict:
    return {c["id"]: c for c in evaluate_claims(rows)}


# ------------------------------------------------------------------ RWER against the row's own route
def test_rwer_is_against_the_kd_baseline_of_the_rows_own_route_and_mode():
    rows = _rows(
        {
            ("offline", "joint", "kd"): 0.25,
            ("offline", "joint", "l0"): 0.20,
            ("offline", "sequential", "l0"): 0.15,
            ("streaming", "joint", "l0"): 0.10,
        }
    )
    rwer = {(r["mode"], r["route"], r["method"]): r["rwer"] for r in rows}
    assert rwer[("offline", "joint", "l0")] == pytest.approx(relative_wer(0.25, 0.20))  # 20 %, not 0 %
    assert rwer[("offline", "sequential", "l0")] == pytest.approx(relative_wer(0.20, 0.15))
    assert rwer[("streaming", "joint", "l0")] == pytest.approx(relative_wer(0.20, 0.10))
    assert rwer[("offline", "joint", "kd")] == rwer[("offline", "sequential", "kd")] == 0.0
    assert rwer[("offline", "reference", "teacher")] is None and rwer[("offline", "reference", "scratch")] is None


def test_summary_means_and_stds_over_seeds_and_rwer_without_a_usable_baseline():
    rows = _rows({("offline", "joint", "l0"): [0.1, 0.15]}, seeds=(0, 1))
    entry = next(s for s in summarise(rows) if (s["mode"], s["route"], s["method"]) == ("offline", "joint", "l0"))
    assert entry["seeds"] == 2 and entry["test_wer"] == pytest.approx(0.125)
    assert entry["test_wer_std"] == pytest.approx(statistics.stdev([0.1, 0.15]))
    assert entry["rwer"] == pytest.approx((50.0 + 25.0) / 2)
    perfect = _rows({(m, r, "kd"): 0.0 for m in MODES for r in ROUTES})
    assert all(r["rwer"] is None for r in perfect)


# ------------------------------------------------------------------ the claims' numbers
def test_claim_functions_compute_their_numbers_and_flip_with_the_wers():
    rows = _rows(
        {
            ("offline", "joint", "kd+l0"): 0.15,
            ("offline", "sequential", "kd+lrf"): 0.175,
            ("streaming", "sequential", "kd+lrf"): 0.1,
            ("streaming", "joint", "l0"): 0.15,
        }
    )
    claim = l0_kd_best_offline(rows, TARGET)
    assert claim["holds"] is True and claim["value"] == pytest.approx(25.0)
    assert claim["details"]["route"] == "joint" and claim["effect"] == pytest.approx(25.0 - 12.5)
    claim = lrf_kd_best_streaming(rows, TARGET)
    assert claim["holds"] is True and claim["value"] == pytest.approx(50.0) and claim["effect"] == pytest.approx(25.0)
    claim = kd_pruning_beats_kd(rows, TARGET)
    assert claim["holds"] is True and claim["value"] == claim["effect"] == pytest.approx(25.0)  # min over modes
    assert claim["details"]["per_mode"]["streaming"] == {"best": "sequential kd+lrf", "rwer": pytest.approx(50.0)}
    tie = _rows({("offline", "joint", "kd+l0"): 0.15, ("offline", "joint", "l0"): 0.15})  # a tie is not "best"
    assert l0_kd_best_offline(tie, TARGET)["holds"] is False
    assert kd_pruning_beats_kd(tie, TARGET)["holds"] is False  # streaming: no KD+pruning gain
    assert l0_kd_best_offline(_rows({("offline", "joint", "kd+l0"): 0.3}), TARGET)["holds"] is False  # worse than KD


def test_a_best_method_claim_needs_another_compression_method_than_the_kd_baseline():
    rows = [
        r for r in _rows({("offline", "joint", "kd+l0"): 0.15}) if r["method"] in ("teacher", "scratch", "kd", "kd+l0")
    ]
    claim = _claims(rows)["l0_kd_best_offline"]  # kd+l0 beats KD by 25 % RWER, yet nothing else is ranked
    assert claim["verdict"] == "undetermined" and claim["value"] is None
    assert "no offline compression method besides kd+l0 and the KD baseline" in claim["reason"]
    with_l0 = [r for r in _rows({("offline", "joint", "kd+l0"): 0.15}) if r["method"] != "kd+lrf"]
    assert _claims(with_l0)["l0_kd_best_offline"]["verdict"] == "held"  # one more method (l0) to rank against


def test_joint_beats_sequential_pairs_the_same_method_across_routes_without_the_kd_baselines():
    wers = {
        ("offline", "joint", "kd+l0"): 0.1,
        ("streaming", "joint", "lrf"): 0.15,
        ("offline", "joint", "l0"): 0.25,
        ("offline", "joint", "kd"): 0.05,
    }  # the KD baselines prune nothing: not a pair
    claim = joint_beats_sequential(_rows(wers), TARGET)
    assert claim["details"]["pairs"] == len(METHODS) * len(MODES) and claim["details"]["joint_wins"] == 2
    assert claim["value"] == claim["effect"] == pytest.approx((0.1 + 0.05 - 0.05) / (len(METHODS) * len(MODES)))
    assert claim["holds"] is False  # a positive mean, but joint won only 2 of 10 pairs
    all_better = {(m, "joint", x): 0.15 for m in MODES for x in METHODS}
    assert joint_beats_sequential(_rows(all_better), TARGET)["holds"] is True


# ------------------------------------------------------------------ verdicts
def test_a_valid_grid_with_one_seed_gives_held_or_not_held_and_says_the_spread_is_unknown():
    claims = _claims(_rows({("offline", "joint", "kd+l0"): 0.15, ("streaming", "sequential", "kd+lrf"): 0.1}))
    assert claims["l0_kd_best_offline"]["verdict"] == "held"
    assert claims["lrf_kd_best_streaming"]["verdict"] == "held"
    assert claims["joint_beats_sequential"]["verdict"] == "not held"
    for claim in claims.values():
        assert "seed spread unknown (1 seed" in claim["reason"], claim
        assert claim["effect_std"] is None and claim["seeds"] == 1


def test_a_kd_baseline_or_scratch_model_on_the_plateau_makes_the_claims_of_its_mode_undetermined():
    better = {("offline", "joint", "kd+l0"): 0.15, ("streaming", "sequential", "kd+lrf"): 0.1}
    plateau = _claims(_rows({**better, ("streaming", "sequential", "kd"): 0.92}))
    for claim_id in ("kd_pruning_beats_kd", "lrf_kd_best_streaming", "joint_beats_sequential"):
        assert plateau[claim_id]["verdict"] == "undetermined", claim_id
        assert (
            "streaming sequential KD baseline (seed 0) is on the blank plateau: test WER 92.0% > 50%"
            in plateau[claim_id]["reason"]
        )
    assert plateau["l0_kd_best_offline"]["verdict"] == "held"  # an offline claim: the streaming rows do not matter
    scratch = _claims(_rows({**better, ("offline", "reference", "scratch"): 0.6}))
    assert scratch["l0_kd_best_offline"]["verdict"] == "undetermined"
    assert "offline scratch (seed 0) is on the blank plateau" in scratch["l0_kd_best_offline"]["reason"]
    assert scratch["lrf_kd_best_streaming"]["verdict"] == "held"
    both = _claims(_rows({**better, ("offline", "joint", "l0"): 0.7, ("offline", "reference", "scratch"): 0.6}))
    reason = both["l0_kd_best_offline"]["reason"]  # the scratch row is quoted first, the student counted
    assert "offline scratch (seed 0) is on the blank plateau: test WER 60.0% > 50% (and 1 more)" in reason


def test_an_effect_within_twice_its_seed_spread_is_undetermined_with_three_seeds():
    noisy = _rows({("offline", "joint", "kd+l0"): [0.14, 0.19, 0.21]}, seeds=(0, 1, 2))  # RWER 30, 5, -5
    claim = _claims(noisy)["l0_kd_best_offline"]
    margins = [30.0, 5.0, 0.0]  # per seed: kd+l0's better route (sequential's 0 in seed 2) minus the best other's 0
    assert claim["effect_per_seed"] == [pytest.approx(m) for m in margins]
    assert claim["effect_std"] == pytest.approx(statistics.stdev(margins))
    assert claim["effect"] == pytest.approx(10.0)  # on the seed means: RWER 10 % over 0
    assert claim["verdict"] == "undetermined" and "within 2 × its seed SD" in claim["reason"]
    steady = _rows({("offline", "joint", "kd+l0"): [0.14, 0.15, 0.16]}, seeds=(0, 1, 2))
    claim = _claims(steady)["l0_kd_best_offline"]
    assert claim["verdict"] == "held" and "exceeds 2 × its seed SD" in claim["reason"]
    two_seeds = _claims(_rows({("offline", "joint", "kd+l0"): [0.14, 0.21]}, seeds=(0, 1)))["l0_kd_best_offline"]
    assert two_seeds["verdict"] == "held" and "seed spread unknown (2 seeds" in two_seeds["reason"]


def test_joint_beats_sequential_is_weighed_by_the_spread_of_the_paired_per_seed_differences():
    """Seeds that shift both routes alike (a shared seed effect) cancel in the paired difference."""
    shift = [0.0, 0.03, -0.02]
    wers = {}
    for m in MODES:
        for x in METHODS:
            wers[(m, "sequential", x)] = [0.20 + s for s in shift]
            wers[(m, "joint", x)] = [0.18 + s + 0.001 * i for i, s in enumerate(shift)]
        for route in ROUTES:
            wers[(m, route, "kd")] = [0.21 + s for s in shift]
    claim = _claims(_rows(wers, seeds=(0, 1, 2)))["joint_beats_sequential"]
    assert claim["effect_per_seed"] == [pytest.approx(0.02), pytest.approx(0.019), pytest.approx(0.018)]
    assert claim["effect_std"] == pytest.approx(0.001)
    assert claim["verdict"] == "held", claim["reason"]  # unpaired, the WERs' seed SD (≈ 0.025) would swamp 0.019


def test_a_failing_check_of_the_claims_modes_makes_it_undetermined():
    better = {("offline", "joint", "kd+l0"): 0.15, ("streaming", "sequential", "kd+lrf"): 0.1}
    off_budget = _claims(_rows(better, sparsity={("offline", "joint", "l0"): 0.70}))
    assert off_budget["l0_kd_best_offline"]["verdict"] == "undetermined"
    reason = off_budget["l0_kd_best_offline"]["reason"]
    assert "offline joint l0 (seed 0) has sparsity 0.700, target 0.75 ± 0.03" in reason
    assert off_budget["lrf_kd_best_streaming"]["verdict"] == "held"
    bad_teacher = _claims(_rows(better, teacher_wer=0.25))
    assert all(c["verdict"] == "undetermined" for c in bad_teacher.values())
    assert "the offline teacher's test WER 25.0% is outside 3%–20%" in bad_teacher["l0_kd_best_offline"]["reason"]
    missing = {c["id"]: c for c in evaluate_claims(_rows(better, modes=("offline",)))}
    assert missing["lrf_kd_best_streaming"]["verdict"] == "undetermined"
    assert "no streaming kd+lrf row" in missing["lrf_kd_best_streaming"]["reason"]


# ------------------------------------------------------------------ validity checks
def test_checks_hold_on_a_valid_grid_and_name_each_failure():
    checks = run_checks(_rows(seeds=(0, 1, 2)))
    assert all(check["held"] is True for check in checks.values()), checks
    assert checks["teacher_in_range"]["teacher_wers"] == {"offline": 0.1, "streaming": 0.1}
    assert {(c["route"], c["mode"]) for c in checks["kd_baseline_separated"]["comparisons"]} == {
        (r, m) for r in ROUTES for m in MODES
    }
    checks = run_checks(
        _rows({("offline", "joint", "l0"): 0.55}, teacher_wer=0.02, sparsity={("streaming", "sequential", "lrf"): 0.79})
    )
    assert checks["teacher_in_range"]["held"] is False and len(checks["teacher_in_range"]["failures"]) == 2
    plateau = checks["students_off_plateau"]
    assert plateau["held"] is False and [f["key"] for f in plateau["failures"]] == ["offline-joint-l0-s0"]
    assert plateau["worst"] == {"key": "offline-joint-l0-s0", "test_wer": 0.55}
    assert checks["budget"]["held"] is False and checks["budget"]["largest_error"] == pytest.approx(0.04)
    assert [f["key"] for f in checks["budget"]["failures"]] == ["streaming-sequential-lrf-s0"]
    assert checks["kd_baseline_separated"]["held"] is False  # 0.20 is 10 × a teacher of 0.02


def test_the_kd_baseline_must_be_within_2_5_times_the_teacher_and_clearly_worse_than_it():
    def separated(kd_wers, seeds):
        wers = {(m, r, "kd"): kd_wers for m in MODES for r in ROUTES}
        return run_checks(_rows(wers, seeds=seeds))["kd_baseline_separated"]

    assert separated(0.25, (0,))["held"] is True  # 2.5 × the teacher: the limit itself
    too_far = separated(0.26, (0,))
    assert too_far["held"] is False and "2.60 × the teacher's test WER" in too_far["failures"][0]["text"]
    one_seed = separated(0.11, (0,))
    assert one_seed["held"] is True and not one_seed["comparisons"][0]["spread_known"]
    assert separated(0.10, (0,))["held"] is False  # as good as the teacher
    noisy = separated([0.11, 0.15, 0.13], (0, 1, 2))  # 3 points above the teacher, SD 2 points: not 2 SDs
    assert noisy["held"] is False and "by more than 2 seed SDs" in noisy["failures"][0]["text"]
    assert separated([0.17, 0.21, 0.19], (0, 1, 2))["held"] is True  # 9 points above, SD 2 points


# ------------------------------------------------------------------ tables
def test_the_results_table_shows_the_paired_speed_up_over_the_teacher_as_a_seed_mean():
    rows = _rows(seeds=(0, 1))
    for row, speedup in zip(rows, [1.0, 1.02] + [2.0 + 0.5 * (r["seed"] == 1) for r in rows[2:]]):
        row["latency_speedup"] = speedup  # the teachers timed against themselves: 1.0 and 1.02
    header, _, *lines = results_table(summarise(rows))
    column = header.split(" | ").index("× faster than the teacher (paired)")
    cells = [line.split(" | ")[column] for line in lines]
    assert cells[:2] == ["1.00", "1.02"]  # one seed: no spread
    assert set(cells[2:]) == {"2.25 ± 0.35"}  # mean and sample SD of 2.0 and 2.5
    old = [{k: v for k, v in r.items() if not k.startswith("latency_speedup")} for r in summarise(rows)]
    assert {line.split(" | ")[column] for line in results_table(old)[2:]} == {"n/a"}  # a study from before


def test_the_claims_table_shows_verdict_signed_values_unsigned_spread_and_reason():
    def claim(unit, value, effect_std):
        return {
            "statement": "s",
            "target_sparsity": 0.5,
            "verdict": "undetermined",
            "value": value,
            "paper": None,
            "effect": value,
            "effect_std": effect_std,
            "held_in_seeds": 1,
            "seeds": 3,
            "unit": unit,
            "reason": "the effect is small | really",
        }

    rwer_row, wer_row = claims_table([claim("RWER %", -2.34, 0.71), claim("WER", 0.125, 0.0213)])[2:]
    assert rwer_row == (
        "| s | 0.5 | undetermined | -2.3 % | — | -2.3 % ± 0.7 % | 1 / 3 | the effect is small / really |"
    )
    assert wer_row.endswith(
        "| +12.50 WER points | — | +12.50 WER points ± 2.13 WER points | 1 / 3 | the effect is small / really |"
    )
    assert claims_table([{**claim("WER", None, None), "effect": None}])[2].count("n/a") == 2


def test_the_checks_table_shows_each_check_and_what_it_measured():
    rows = _rows({("offline", "joint", "l0"): 0.4})
    lines = checks_table(run_checks(rows))
    assert lines[0] == "| validity check | held | measured |" and len(lines) == 2 + 4
    assert "| yes | offline 10.0%, streaming 10.0% |" in lines[2]
    assert "highest 40.0% (offline-joint-l0-s0)" in lines[3]
    assert "offline sequential 2.00 ×" in lines[4] and "largest sparsity error 0.000" in lines[5]
