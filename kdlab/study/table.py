"""The results table: one row per trained model and seed, its RWER, and the mean ± std over seeds.

A row (a dict; ``COLUMNS`` in order) holds the grid coordinates (``mode``, ``route``, ``method``,
``target_sparsity``, ``seed``), the model's measured ``encoder_params`` / ``params`` (whole RNN-T
model) / ``macs_per_second`` (encoder, per second of audio) / ``latency_ms`` (batch-1 CPU encoder
latency on ``latency_audio_seconds`` of audio; ``latency_teacher_ms`` the teacher's, timed in the same
rounds, ``latency_speedup`` the median of their ratios; ``latency_runtime`` names the runtime), the
run's ``dev_wer`` / ``test_wer`` (fractions) and the held-out test sets' ``unseen_engine_wer`` /
``unseen_text_wer`` (None for a corpus without them),
its budget (``budget_params`` = (1 − t) · ``teacher_encoder_params``, ``achieved_sparsity`` =
1 − encoder_params / teacher_encoder_params and ``within_budget``: |achieved − t| ≤
``BUDGET_TOLERANCE``, 3 sparsity points), and

    rwer = (WER_kd − WER_row) / WER_kd × 100     (test WER; the KD baseline of the row's own
                                                  route, mode, target and seed; positive = better
                                                  than that baseline)

None where it is undefined: the references (teacher, from scratch) belong to no route, and a KD
baseline with WER 0 gives no ratio.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from kdlab.eval.wer import relative_wer
from kdlab.study.checks import is_kd_baseline
from kdlab.study.config import BUDGET_TOLERANCE

GROUP_KEYS = ("mode", "route", "method", "target_sparsity")
COLUMNS = (
    "key",
    *GROUP_KEYS,
    "seed",
    "encoder_params",
    "params",
    "teacher_encoder_params",
    "budget_params",
    "within_budget",
    "achieved_sparsity",
    "macs_per_second",
    "latency_ms",
    "latency_teacher_ms",
    "latency_speedup",
    "latency_audio_seconds",
    "dev_wer",
    "test_wer",
    "unseen_engine_wer",
    "unseen_text_wer",
    "rwer",
    "train_seconds",
    "run_dir",
)
#: Columns averaged over seeds in the summary (each with a ``<name>_std``).
SUMMARY_METRICS = (
    "encoder_params",
    "params",
    "achieved_sparsity",
    "macs_per_second",
    "latency_ms",
    "latency_speedup",
    "dev_wer",
    "test_wer",
    "unseen_engine_wer",
    "unseen_text_wer",
    "rwer",
)
#: Row column -> the held-out split (`kdlab.data.corpus.HELD_OUT_SPLITS`) whose WER / CER it holds.
HELD_OUT_COLUMNS = {"unseen_engine": "test_unseen_engine", "unseen_text": "test_unseen_text"}


def held_out_fields(metrics: dict) -> dict:
    """``<name>_wer`` / ``<name>_cer`` of the held-out test sets in a run's metrics (None where absent)."""
    return {
        f"{name}_{rate}": metrics.get(split, {}).get(rate)
        for name, split in HELD_OUT_COLUMNS.items()
        for rate in ("wer", "cer")
    }


def budget_fields(encoder_params: int, teacher_params: int, target: float | None) -> dict:
    """``budget_params``, ``within_budget`` (None without a target) and ``achieved_sparsity``."""
    sparsity = 1.0 - encoder_params / teacher_params
    if target is None:
        return {"budget_params": None, "within_budget": None, "achieved_sparsity": sparsity}
    return {
        "budget_params": (1.0 - target) * teacher_params,
        "within_budget": abs(sparsity - target) <= BUDGET_TOLERANCE,
        "achieved_sparsity": sparsity,
    }


def baseline_of(row: dict, rows: list[dict]) -> dict | None:
    """The KD baseline row of ``row``'s route, mode, target and seed (None for the references,
    which belong to no route, or when the grid has none)."""
    for other in rows:
        if is_kd_baseline(other) and all(other[k] == row[k] for k in ("route", "mode", "target_sparsity", "seed")):
            return other
    return None


def add_rwer(rows: list[dict]) -> list[dict]:
    """Copies of ``rows`` with ``rwer`` (see the module docstring)."""
    out = []
    for row in rows:
        baseline = baseline_of(row, rows)
        usable = baseline is not None and baseline["test_wer"] > 0
        out.append({**row, "rwer": relative_wer(baseline["test_wer"], row["test_wer"]) if usable else None})
    return out


def _mean_std(values: list) -> tuple[float | None, float | None]:
    if not values or any(v is None for v in values):
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (mode, route, method, target) in first-seen order: ``seeds`` (count), the
    ``SUMMARY_METRICS`` as means with ``<name>_std`` (sample std; None for one seed), and
    ``within_budget`` True only if every seed's model is within budget."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    summary = []
    for key, members in groups.items():
        entry = dict(zip(GROUP_KEYS, key))
        entry["seeds"] = len(members)
        for name in SUMMARY_METRICS:
            entry[name], entry[f"{name}_std"] = _mean_std([m.get(name) for m in members])
        flags = [m["within_budget"] for m in members]
        entry["within_budget"] = None if None in flags else all(flags)
        summary.append(entry)
    return summary


def write_csv(rows: list[dict], path: str | Path) -> None:
    """``rows`` as CSV with the ``COLUMNS`` header (empty cell = None)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
