"""The one measurement of a compressed encoder against its teacher: parameters, sparsity, MACs per
second of audio and (optionally) CPU latency.

    measured = measure_encoder(student, teacher, solo_latency(seconds=10.0, seed=0))

The recipes store what they need of it under their result.json names: the compression route
(``params`` / ``teacher_params``, ``compress.measured_result``), the joint route and the study
(``study.recipes.measure_model``, whose latency is timed paired with the teacher in a chosen runtime).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdlab.compress.param_count import expected_macs_per_second
from kdlab.eval.latency import measure_latency
from kdlab.models.conformer import ConformerEncoder

#: Times a student encoder and its teacher: (encoder, teacher) -> latency fields of the result.
LatencyTimer = Callable[[ConformerEncoder, ConformerEncoder], dict]


def measure_encoder(encoder: ConformerEncoder, teacher: ConformerEncoder, latency: LatencyTimer | None = None) -> dict:
    """``encoder_params`` / ``teacher_encoder_params`` (real counts), ``achieved_sparsity`` = 1 − their
    ratio, ``macs_per_second`` / ``teacher_macs_per_second`` (deterministic counts, per second of
    audio), ``mac_reduction`` = teacher / student MACs, and the fields of ``latency(encoder, teacher)``
    when a timer is given."""
    params, teacher_params = encoder.num_parameters(), teacher.num_parameters()
    macs = float(expected_macs_per_second(encoder, deterministic=True))
    teacher_macs = float(expected_macs_per_second(teacher, deterministic=True))
    measured = {
        "encoder_params": params,
        "teacher_encoder_params": teacher_params,
        "achieved_sparsity": 1.0 - params / teacher_params,
        "macs_per_second": macs,
        "teacher_macs_per_second": teacher_macs,
        "mac_reduction": teacher_macs / macs,
    }
    return {**measured, **(latency(encoder, teacher) if latency is not None else {})}


def _solo(encoder: ConformerEncoder, seconds: float, seed: int) -> dict:
    """Batch-1 latency of one ``seconds`` utterance of random 10 ms features (``seed``), median after
    warm-up (``LatencyResult.to_dict``)."""
    frames = round(100 * seconds) + 3
    features = torch.randn(1, frames, encoder.config.input_dim, generator=torch.Generator().manual_seed(seed))
    lengths = torch.tensor([frames])
    return measure_latency(
        lambda: encoder(features, lengths), warmup=3, min_time_s=0.3, audio_seconds=seconds
    ).to_dict()


def solo_latency(seconds: float, seed: int) -> LatencyTimer:
    """A timer of the student, then the teacher, each alone on the CPU (eval): ``latency`` and
    ``teacher_latency`` (``LatencyResult.to_dict``), ``latency_speedup`` (teacher / student median)
    and ``torch_threads``."""

    def timer(encoder: ConformerEncoder, teacher: ConformerEncoder) -> dict:
        latency, teacher_latency = _solo(encoder, seconds, seed), _solo(teacher, seconds, seed)
        return {
            "latency": latency,
            "teacher_latency": teacher_latency,
            "latency_speedup": teacher_latency["median_s"] / latency["median_s"],
            "torch_threads": torch.get_num_threads(),
        }

    return timer
