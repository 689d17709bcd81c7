"""Numeric precision of the training steps: float32, or bfloat16 autocast (``--precision bf16``).

bf16 runs the forward pass of each step under `torch.autocast` (matrix products and convolutions
in bfloat16, on CUDA; on a CPU only where the CPU has bf16 units does it pay); the RNN-T loss
always runs in float32 (`kdlab.models.rnnt.RNNTModel.loss`) and so do the optimizer and the
weights. The training commands set ``KDLAB_PRECISION`` for the process and those it starts, and
`TrainerConfig.precision` takes it as its default, so a run's config records its precision.
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("fp32", "bf16")
PRECISION_ENV = "KDLAB_PRECISION"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def default_precision() -> str:
    """``$KDLAB_PRECISION`` (set by --precision), else "fp32"."""
    return check_precision(os.environ.get(PRECISION_ENV, "fp32"))


def autocast(device: torch.device, precision: str):
    """The context a training step's forward pass runs in: bf16 autocast, or nothing for fp32."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
