"""One rank of the torchrun tests (tests/test_distributed.py): runs a kdlab command in this process
and reports, under ``$DDP_TEST_OUT``, what the rank wrote and the weights it ended with.

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py finetune --profile tiny ...

- ``writes-<rank>.json``: files this rank opened for writing (or renamed into place) under
  ``$DDP_TEST_WATCH`` (Python's audit hooks see every ``open`` and ``os.replace``; `torch.save`
  writes a path natively, so it is watched by a wrapper);
- ``weights-<rank>.pt``: the state of the model and extra modules of the last trainer that
  finished ``fit`` here (in memory, not a file rank 0 wrote);
- ``$DDP_TEST_STOP_AT=k``: the rank sends itself SIGTERM during step k, as a job scheduler would.

Instead of a kdlab command, ``l0-toy RUN_DIR`` trains a linear model behind hard-concrete gates
with the Lagrangian controller (the joint route's moving parts) on toy bucketed batches.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from kdlab.cli import main
from kdlab.train import distributed
from kdlab.train.trainer import Trainer

OUT, WATCH = Path(os.environ["DDP_TEST_OUT"]), os.path.realpath(os.environ["DDP_TEST_WATCH"])
STOP_AT = int(os.environ.get("DDP_TEST_STOP_AT", "0"))
writes: list[str] = []
finished: dict = {}


def _note(path) -> None:
    path = os.path.realpath(os.fsdecode(path))
    if path.startswith(WATCH):
        writes.append(os.path.relpath(path, WATCH))


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and any(m in str(args[1]) for m in "wax+"):
        _note(args[0])
    elif event == "os.rename":
        _note(args[1])


def _save(original):
    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, bytes, os.PathLike)):
            _note(f)
        return original(obj, f, *args, **kwargs)

    return save


def _fit(original):
    def fit(self: Trainer):
        history = original(self)
        finished["state"] = {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "step": self.step,
        }
        return history

    return fit


def _train_step(original):
    def train_step(self: Trainer, batch):
        original(self, batch)
        if self.step + 1 == STOP_AT:
            os.kill(os.getpid(), signal.SIGTERM)

    return train_step


class ToyBatches:
    """Re-iterable (x, y) batches of a `BucketBatchSampler` over 24 toy utterances (shardable like a SpeechLoader)."""

    def __init__(self) -> None:
        from kdlab.data.batching import BucketBatchSampler

        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 8, generator=generator)
        self.y = self.x[:, :3].sum(1, keepdim=True)
        durations = (torch.rand(24, generator=generator) + 0.5).tolist()
        self.batch_sampler = BucketBatchSampler(durations, max_frames_per_batch=600, seed=0)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for indices in self.batch_sampler:
            yield self.x[indices], self.y[indices]


def l0_toy(run_dir: str) -> None:
    from torch import nn

    from kdlab.compress.hardconcrete import HardConcreteGate
    from kdlab.compress.lagrangian import SparsityController, lagrangian_param_group
    from kdlab.train.trainer import TrainerConfig

    torch.manual_seed(0)
    model = nn.ModuleDict({"gate": HardConcreteGate(8, init_keep_prob=0.9, seed=1), "linear": nn.Linear(8, 1)})
    controller = SparsityController(0.5, warmup_steps=2)
    trainer = None

    def step_fn(m, batch):
        x, y = batch
        task = (m["linear"](x * m["gate"]()) - y).pow(2).mean()
        expected = 1.0 - m["gate"].prob_nonzero().mean()
        return task + controller.penalty(expected, trainer.step), {"expected_sparsity": expected}

    groups = [
        {"params": [model["gate"].log_alpha], "lr": 0.1, "name": "gates", "scheduled": False},
        {**lagrangian_param_group(controller, 0.1), "name": "lagrangian", "scheduled": False},
    ]
    trainer = Trainer(
        model,
        TrainerConfig(max_steps=6, lr=0.05, warmup_steps=0, log_every=2, device="cpu", progress=False),
        step_fn,
        ToyBatches(),
        param_groups=groups,
        modules={"lagrangian": controller},
        run_dir=run_dir,
    )
    trainer.fit()


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.save = _save(torch.save)
    Trainer.fit = _fit(Trainer.fit)
    Trainer._train_step = _train_step(Trainer._train_step)
    sys.addaudithook(_audit)
    OUT.mkdir(parents=True, exist_ok=True)
    rank = distributed.rank()
    try:
        l0_toy(sys.argv[2]) if sys.argv[1] == "l0-toy" else main(sys.argv[1:])
    finally:
        (OUT / f"writes-{rank}.json").write_text(json.dumps(writes))
        if finished:
            torch.save(finished["state"], OUT / f"weights-{rank}.pt")
