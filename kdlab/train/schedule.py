"""Learning-rate schedules: linear warm-up, then noam / cosine / linear decay / constant.

``lr_factor(step, ...)`` is the multiplier of a group's base learning rate for the update with
0-based index ``step``; it is a pure function of the step, so a resumed run needs no scheduler
state beyond the step counter. Warm-up rises linearly to 1 at update ``warmup_steps - 1``;
after it:

* ``noam``     sqrt(warmup / (step + 1)) -- inverse square root, 1 at the end of warm-up;
* ``cosine``   min_ratio + (1 - min_ratio) · (1 + cos(pi·p)) / 2;
* ``linear``   min_ratio + (1 - min_ratio) · (1 - p);
* ``constant`` 1;

with p = (step - warmup) / (max_steps - warmup) in [0, 1) the progress of the decay phase.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("noam", "cosine", "linear", "constant")


def lr_factor(step: int, schedule: str, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for update `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "noam":
        return math.sqrt(max(warmup_steps, 1) / (step + 1))
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set each group's ``lr`` to ``base_lr · factor``, or to ``base_lr`` when its ``scheduled`` is False."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor if group["scheduled"] else group["base_lr"]
