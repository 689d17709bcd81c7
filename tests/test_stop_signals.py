"""Every recipe's trainer checkpoints at SIGTERM / Ctrl-C before the signal acts, after
``checkpoint_seconds`` of training, and counts the time of every process that trained the run."""

import os
import signal

import pytest
import torch
from torch import nn

from kdlab.train.trainer import Trainer, TrainerConfig

torch.set_num_threads(1)
DATA = [(torch.randn(4, 3, generator=torch.Generator().manual_seed(i)), torch.zeros(4, 1)) for i in range(4)]


def make_trainer(run_dir, interrupt_at=None, **overrides):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    calls = []

    def step_fn(m, batch):
        calls.append(1)
        if len(calls) == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the step
        x, y = batch
        return ((m(x) - y) ** 2).mean(), {}

    config = TrainerConfig(
        **{"max_steps": 8, "warmup_steps": 0, "log_every": 1, "progress": False, "device": "cpu", **overrides}
    )
    return Trainer(model, config, step_fn, DATA, run_dir=run_dir)


@pytest.fixture
def python_ctrl_c():
    """SIGINT raising KeyboardInterrupt, as in a fresh interpreter: a library used by an earlier test in
    the same xdist worker may have left another handler, and the trainer hands the signal to the one it found."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_checkpoints_then_interrupts_and_the_run_resumes(tmp_path, python_ctrl_c):
    trainer = make_trainer(tmp_path, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 3 and saved["elapsed_seconds"]["wall"] > 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are restored

    resumed = make_trainer(tmp_path)
    resumed.load_checkpoint()
    assert resumed.resumed_seconds == saved["elapsed_seconds"]
    resumed.fit()
    uninterrupted = make_trainer(tmp_path / "other")
    uninterrupted.fit()
    assert resumed.step == 8
    for a, b in zip(resumed.model.parameters(), uninterrupted.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.elapsed()["wall"] > saved["elapsed_seconds"]["wall"]  # both processes' time


def test_a_checkpoint_is_written_after_checkpoint_seconds_of_training(tmp_path):
    written = []
    trainer = make_trainer(tmp_path, checkpoint_seconds=1e-9)
    trainer.save_checkpoint = lambda path=None: written.append(trainer.step)
    trainer.fit()
    assert written == list(range(1, 9))
    written.clear()
    quiet = make_trainer(tmp_path / "b", checkpoint_seconds=0)
    quiet.save_checkpoint = lambda path=None: written.append(quiet.step)
    quiet.fit()
    assert written == [8]  # at the end only
