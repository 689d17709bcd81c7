"""CPU latency and real-time factor: one function alone (`torch.utils.benchmark`: warm-up, median),
or a model paired with a reference (interleaved rounds, medians: the study's latency column)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


def _import_benchmark():
    """``torch.utils.benchmark``, imported without the warning "No CUDA runtime is found" that a CUDA
    build of torch (PyPI's default on Linux) logs on a machine without CUDA: it is not about kdlab
    and would show in red in every notebook that measures latency."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.benchmark as benchmark
    finally:
        logger.setLevel(level)
    return benchmark


benchmark = _import_benchmark()


@dataclass(frozen=True)
class LatencyResult:
    """Median latency of one call and, when `audio_seconds` was given, the real-time factor."""

    median_s: float
    iqr_s: float
    runs: int
    audio_seconds: float | None = None

    @property
    def real_time_factor(self) -> float | None:
        """Processing time / audio duration (< 1 is faster than real time)."""
        if not self.audio_seconds:
            return None
        return self.median_s / self.audio_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "real_time_factor": self.real_time_factor}


def measure_latency(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_runs: int = 5,
    min_time_s: float = 0.5,
    threads: int | None = None,
    audio_seconds: float | None = None,
) -> LatencyResult:
    """Median wall time of `fn()` after `warmup` calls, over at least `min_runs` runs.

    Runs under `torch.inference_mode()`; `threads` sets the torch thread count for the
    measurement (default: the current setting).
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be >= 1, got {min_runs}")
    num_threads = threads or torch.get_num_threads()
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
        measurement = timer.blocked_autorange(min_run_time=min_time_s)
        while len(measurement.times) < min_runs:
            extra = timer.blocked_autorange(min_run_time=min_time_s)
            measurement = benchmark.Measurement.merge([measurement, extra])[0]
    return LatencyResult(
        median_s=float(measurement.median),
        iqr_s=float(measurement.iqr),
        runs=len(measurement.times),
        audio_seconds=audio_seconds,
    )


@dataclass(frozen=True)
class PairedLatency:
    """Median seconds per call of a model and of its reference, timed in alternating rounds, and
    the median over rounds of reference time / model time (so a busy moment hits both)."""

    median_s: float
    reference_median_s: float
    speedup: float
    rounds: int


def measure_paired_latency(
    fn: Callable[[], object],
    reference_fn: Callable[[], object],
    *,
    rounds: int = 5,
    min_time_s: float = 0.3,
    warmup: int = 2,
) -> PairedLatency:
    """Time ``fn`` and ``reference_fn`` interleaved: ``rounds`` rounds (order swapped every round),
    each timing a block of calls of each, blocks sized so all of them take about ``min_time_s``
    per function; after ``warmup`` calls of each. Runs under ``torch.inference_mode()``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    pair = (fn, reference_fn)
    with torch.inference_mode():
        single = []
        for f in pair:
            for _ in range(warmup):
                f()
            start = time.perf_counter()
            f()
            single.append(max(time.perf_counter() - start, 1e-6))
        calls = max(1, round(min_time_s / rounds / max(single)))
        times = ([], [])
        for r in range(rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                start = time.perf_counter()
                for _ in range(calls):
                    pair[i]()
                times[i].append((time.perf_counter() - start) / calls)
    return PairedLatency(
        statistics.median(times[0]),
        statistics.median(times[1]),
        statistics.median(b / a for a, b in zip(*times)),
        rounds,
    )
