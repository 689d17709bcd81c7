"""Random-number state: seeding, capturing (for checkpoints) and isolating (for side work).

The state covers Python's ``random``, NumPy's global generator, torch's CPU generator and,
when CUDA is initialised, every CUDA generator. Captured states contain only tuples, lists,
numbers and tensors, so checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all CUDA devices) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that is a fixed function of integer `keys`, e.g. (seed, epoch)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def capture_rng_state() -> dict:
    """Every global generator's state, as a checkpointable dict."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without changing any global generator's state (restored on exit)."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
