"""Which device a process trains on when several train side by side (``study --workers N``)."""

from __future__ import annotations

import torch


def worker_device(device: str, worker: int) -> str:
    """The device of worker `worker` (0, 1, ...): with "auto" or "cuda" on a machine with n > 1 GPUs,
    ``cuda:(worker mod n)`` (one GPU per worker, round robin); otherwise `device` as given
    ("cpu", an explicit "cuda:N", or the only GPU)."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{worker % torch.cuda.device_count()}"
    return device


def worker_gpus(worker: int, per_run: int) -> list[int] | None:
    """The GPUs of worker `worker` when each of its runs trains on `per_run` of them (``study
    --gpus-per-run``): ids worker·per_run .. worker·per_run + per_run - 1, modulo the GPU count;
    None without CUDA (the run's processes then share the CPU, one thread each)."""
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return [(worker * per_run + j) % count for j in range(per_run)]
