"""What a training phase cost: optimiser steps, speech frames seen, CPU and wall seconds.

    phase_cost(metrics, data.train_loader(frames_per_batch, seed))   # metrics: steps, cpu / wall seconds
    # {"steps": 200, "frames": 731_204, "padded_frames": 796_812, "cpu_seconds": 88.1, "wall_seconds": 47.9}

Frames are 10 ms feature frames: ``frames`` the utterances' own, ``padded_frames`` batch size x
longest utterance (what the batch bound ``frames_per_batch`` limits). They are counted from the
loader's batch plan (a function of its seed and epoch, as the trainer draws it), not by loading
audio, so two phases with the same steps, batch bound and seed report the same frames.
"""

from __future__ import annotations

from kdlab.data.batching import SpeechLoader


def scheduled_frames(loader: SpeechLoader, steps: int) -> dict:
    """``{"frames", "padded_frames"}`` of the first ``steps`` batches ``loader`` yields, epoch after epoch."""
    sampler = loader.batch_sampler
    frames = padded = taken = epoch = 0
    while taken < steps:
        sampler.set_epoch(epoch)
        batches = list(sampler)
        if not batches:
            raise ValueError("the loader plans no batch: every utterance is longer than its frame bound")
        for batch in batches[: steps - taken]:
            lengths = sampler.frames[batch]
            frames, padded = frames + int(lengths.sum()), padded + int(lengths.max()) * len(batch)
        taken += min(len(batches), steps - taken)
        epoch += 1
    sampler.set_epoch(0)
    return {"frames": frames, "padded_frames": padded}


def phase_cost(metrics: dict, loader: SpeechLoader) -> dict:
    """``{"steps", "frames", "padded_frames", "cpu_seconds", "wall_seconds"}`` of a phase whose
    trainer reported ``metrics`` (``steps``, ``cpu_seconds``, ``wall_seconds``: every process that
    trained it) and drew its batches from ``loader`` (frames None when it is not a ``SpeechLoader``);
    an empty ``metrics`` (a phase of 0 steps) costs 0."""
    steps = metrics.get("steps", 0)
    if not isinstance(loader, SpeechLoader):  # a plain list of batches (tests): no batch plan to count
        frames = {"frames": None, "padded_frames": None}
    else:
        frames = scheduled_frames(loader, steps) if steps else {"frames": 0, "padded_frames": 0}
    return {
        "steps": steps,
        **frames,
        "cpu_seconds": metrics.get("cpu_seconds", 0.0),
        "wall_seconds": metrics.get("wall_seconds", 0.0),
    }
