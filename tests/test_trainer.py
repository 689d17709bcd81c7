"""Trainer: exact resume, determinism, non-finite handling, param groups, schedules, files."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlab.train.checkpoint import load_checkpoint, save_checkpoint
from kdlab.train.epochs import EpochIterator
from kdlab.train.history import History
from kdlab.train.rng import seed_everything
from kdlab.train.schedule import lr_factor
from kdlab.train.trainer import NonFiniteLossError, Trainer, TrainerConfig, resolve_device

torch.set_num_threads(1)

X = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
Y = X.sum(dim=1, keepdim=True)


class Crash(Exception):
    """Stands for a killed process."""


class Controller(nn.Module):
    """A stateful module outside the model (like the Lagrangian controller)."""

    def __init__(self) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.zeros(()))


def make_trainer(run_dir=None, model_seed=0, crash_at=None, nan_at=(), **overrides):
    torch.manual_seed(model_seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    controller = Controller()
    calls = []

    def step_fn(model, batch):
        calls.append(1)
        if len(calls) == crash_at:
            raise Crash
        x, y = batch
        # Global torch (dropout), NumPy and Python RNGs all take part in the step.
        noise = 1.0 + 0.01 * np.random.rand() + 0.01 * random.random()
        loss = ((model(x) - y) ** 2).mean() * noise + controller.lam**2
        if len(calls) in nan_at:
            loss = loss * float("nan")
        return loss, {"mae": (model(x) - y).abs().mean()}

    def eval_fn(model):
        return {"val": float(model(X).mean() + torch.rand(()))}  # uses RNG: must not disturb training

    config = dict(
        max_steps=12,
        lr=0.02,
        warmup_steps=3,
        schedule="cosine",
        log_every=2,
        eval_every=4,
        checkpoint_every=5,
        progress=False,
        device="cpu",
        seed=0,
    )
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True)  # 3 batches per epoch
    groups = [{"params": controller.parameters(), "lr": 0.1, "scheduled": False, "name": "ctrl"}]
    trainer = Trainer(
        model,
        TrainerConfig(**{**config, **overrides}),
        step_fn,
        loader,
        param_groups=groups,
        modules={"ctrl": controller},
        eval_fn=eval_fn,
        record_fn=lambda m: {"w0": m[0].weight[0, :2]},
        run_dir=run_dir,
    )
    return trainer, controller


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path):
    full, full_ctrl = make_trainer(tmp_path / "full")
    full.fit()

    crashed, _ = make_trainer(tmp_path / "run", crash_at=9)
    with pytest.raises(Crash):
        crashed.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 5

    resumed, resumed_ctrl = make_trainer(tmp_path / "run", model_seed=123)  # fresh process, other init
    resumed.load_checkpoint()
    assert resumed.step == 5 and resumed.batches.state_dict() == {"epoch": 1, "position": 2}
    resumed.fit()

    assert state_equal(resumed.model.state_dict(), full.model.state_dict())
    assert state_equal(resumed_ctrl.state_dict(), full_ctrl.state_dict())
    assert resumed.history == full.history
    assert History.load(tmp_path / "run" / "history.json") == History.load(tmp_path / "full" / "history.json")
    assert [r["step"] for r in full.history.of("eval")] == [4, 8, 12]
    assert [r["step"] for r in full.history.of("train")] == [2, 4, 6, 8, 10, 12]
    assert len(full.history.of("record")[0]["w0"]) == 2


def test_same_seed_same_numbers_and_other_seed_differs():
    first, _ = make_trainer(eval_every=0)
    second, _ = make_trainer(eval_every=0)
    other, _ = make_trainer(eval_every=0, seed=1)
    for trainer in (first, second, other):
        trainer.fit()
    assert first.history == second.history
    assert state_equal(first.model.state_dict(), second.model.state_dict())
    assert first.history.series("train", "loss")[1] != other.history.series("train", "loss")[1]


def test_evaluation_and_records_do_not_change_the_training_run():
    plain, _ = make_trainer(eval_every=0)
    plain.eval_fn = plain.record_fn = None
    evaluated, _ = make_trainer(eval_every=1)
    plain.fit()
    evaluated.fit()
    assert plain.history.of("train") == evaluated.history.of("train")
    assert state_equal(plain.model.state_dict(), evaluated.model.state_dict())
    assert len(evaluated.history.of("eval")) == 12


def test_training_reduces_the_loss():
    trainer, _ = make_trainer(max_steps=60, log_every=10, schedule="constant", eval_every=0)
    trainer.fit()
    losses = trainer.history.series("train", "loss")[1]
    assert losses[-1] < 0.5 * losses[0]


def test_nonfinite_loss_is_skipped_without_update_and_counted():
    trainer, _ = make_trainer(nan_at=(3,), max_steps=3, log_every=1, eval_every=0)
    trainer.fit()  # steps 1, 2 update; step 3 has a NaN loss
    after_two = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    reference, _ = make_trainer(max_steps=3, log_every=1, eval_every=0)
    reference.config.max_steps = 2
    reference.fit()
    assert state_equal(after_two, reference.model.state_dict())  # step 3 changed nothing
    assert trainer.skipped == 1 and trainer.history.last("train")["skipped"] == 1
    assert "loss" not in trainer.history.last("train")  # no finite step in that log window


def test_too_many_nonfinite_steps_stop():
    trainer, _ = make_trainer(nan_at=(2, 4), max_skips=1, eval_every=0)
    with pytest.raises(NonFiniteLossError, match="max_skips=1"):
        trainer.fit()
    assert trainer.step == 3


def test_nonfinite_stop_mode_raises_at_once():
    trainer, _ = make_trainer(nan_at=(2,), nonfinite="stop", eval_every=0)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 2"):
        trainer.fit()


def test_param_groups_scheduled_and_unscheduled_learning_rates():
    trainer, controller = make_trainer(max_steps=6, log_every=1, eval_every=0, schedule="linear")
    trainer.fit()
    records = trainer.history.of("train")
    for step, record in enumerate(records):
        expected = 0.02 * lr_factor(step, "linear", 3, 6)
        assert record["lr"] == pytest.approx(expected)
        assert record["lr/ctrl"] == 0.1
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert names == ["model", "ctrl"]
    assert trainer.optimizer.param_groups[1]["params"] == [controller.lam]


def test_parameter_outside_model_and_modules_is_rejected():
    model = nn.Linear(2, 1)
    stray = nn.Parameter(torch.zeros(()))
    with pytest.raises(ValueError, match="neither in the model nor in `modules`"):
        Trainer(
            model,
            TrainerConfig(device="cpu"),
            lambda m, b: (m(b).sum(), {}),
            [torch.zeros(1, 2)],
            param_groups=[{"params": [stray]}],
        )


def test_gradient_clipping_bounds_the_norm_at_the_update():
    trainer, _ = make_trainer(grad_clip=0.01, max_steps=4, eval_every=0)
    norms = []
    params = trainer._clip_params
    trainer.optimizer.register_step_pre_hook(
        lambda *_: norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))))
    )
    trainer.fit()
    assert len(norms) == 4 and max(norms) <= 0.01 * (1 + 1e-4)
    assert trainer.history.last("train")["grad_norm"] > 0.01  # the logged norm is the one before clipping


def test_schedules():
    warm = [lr_factor(s, "cosine", 4, 20) for s in range(4)]
    assert warm == [0.25, 0.5, 0.75, 1.0]
    cosine = [lr_factor(s, "cosine", 4, 20, min_lr_ratio=0.1) for s in range(4, 20)]
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] > 0.1
    assert lr_factor(15, "noam", 4, 20) == pytest.approx(math.sqrt(4 / 16))
    assert lr_factor(12, "linear", 4, 20) == pytest.approx(0.5)
    assert lr_factor(100, "constant", 4, 20) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor(0, "step", 0, 1)


def test_epoch_iterator_resumes_at_the_same_batch_and_sets_epochs():
    class Source:
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            order = torch.randperm(5).tolist()  # global RNG: seeded per epoch by the iterator
            return iter(order[:3])

    full = EpochIterator(Source(), seed=3)
    expected = [next(full) for _ in range(8)]
    first = EpochIterator(Source(), seed=3)
    head = [next(first) for _ in range(4)]
    torch.rand(7)  # the global RNG moved on, as in a resumed process
    source = Source()
    resumed = EpochIterator(source, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert head + [next(resumed) for _ in range(4)] == expected
    assert source.epochs == [1, 2]
    with pytest.raises(ValueError, match="yielded no batch"):
        next(EpochIterator([], seed=0))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_refuses_a_different_config(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=2, eval_every=0)
    trainer.fit()
    other, _ = make_trainer(tmp_path, max_steps=4, lr=0.5, eval_every=0)
    with pytest.raises(ValueError, match="lr: 0.02 -> 0.5"):
        other.load_checkpoint()
    longer, _ = make_trainer(tmp_path, max_steps=4, eval_every=0)  # max_steps may grow
    longer.load_checkpoint()
    longer.fit()
    assert longer.step == 4


def test_run_dir_files_and_config_round_trip(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=2, eval_every=0)
    trainer.fit()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert TrainerConfig.from_dict(saved["trainer"]) == trainer.config
    assert json.loads((tmp_path / "history.json").read_text()) == trainer.history.records
    with pytest.raises(ValueError, match="unknown TrainerConfig keys"):
        TrainerConfig.from_dict({"lr": 1e-3, "learning_rate": 1})


def test_config_and_device_errors():
    with pytest.raises(ValueError, match="nonfinite must be 'skip' or 'stop'"):
        TrainerConfig(nonfinite="ignore")
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        TrainerConfig(max_steps=0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu-ish")


def test_seed_everything_resets_all_generators():
    seed_everything(5)
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_everything(5)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a
