"""What a study row records of where its model started and what its training cost.

    row.update(start_and_cost(metrics))     # metrics: the row's run's result.json

* ``ssl_encoder_digest`` / ``fresh_heads_digest``: hashes of the SSL encoder weights the student
  started from and of its predictor / joiner before training (``student_start``); None for the
  teacher and from-scratch rows, which start elsewhere.
* ``kd_source``: where a joint kd row's KD came from ("ssl" or "finetuned"), else None.
* ``ctc_steps`` / ``ctc_frames`` / ``rnnt_steps`` / ``rnnt_frames``: the ASR schedule the model
  got (steps, and 10 ms speech frames: ``training_cost``); every student row has the same ones.
* ``asr_cpu_seconds``, ``compress_cpu_seconds`` (the sequential route's task-agnostic
  compression; 0 elsewhere) and ``train_cpu_seconds``, their sum: what the row was paid.

Runs trained before these were recorded give None.
"""

from __future__ import annotations


def _sum(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(sum(values)) if values else None


def start_and_cost(metrics: dict) -> dict:
    """The row fields of the module docstring, read from a run's ``result.json``."""
    asr = metrics.get("asr_cost") or {}
    ctc, rnnt = asr.get("ctc") or {}, asr.get("rnnt") or {}
    compress = metrics.get("compress_cost") or {}
    asr_cpu = _sum([ctc.get("cpu_seconds"), rnnt.get("cpu_seconds")])
    compress_cpu = _sum(phase.get("cpu_seconds") for phase in compress.values()) or 0.0
    return {
        "ssl_encoder_digest": metrics.get("ssl_encoder_digest"),
        "fresh_heads_digest": metrics.get("fresh_heads_digest"),
        "kd_source": metrics.get("kd_source"),
        "ctc_steps": ctc.get("steps"),
        "ctc_frames": ctc.get("frames"),
        "rnnt_steps": rnnt.get("steps"),
        "rnnt_frames": rnnt.get("frames"),
        "asr_cpu_seconds": asr_cpu,
        "compress_cpu_seconds": compress_cpu,
        "train_cpu_seconds": None if asr_cpu is None else asr_cpu + compress_cpu,
    }
