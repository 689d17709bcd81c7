"""--tensorboard: every trainer writes its history's scalars as TensorBoard events, read back here."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from kdlab.cli import build_parser
from kdlab.commands._option_types import apply_training_options
from kdlab.train.tensorboard_log import TENSORBOARD_ENV, run_log_folder, scalars
from kdlab.train.trainer import Trainer, TrainerConfig

torch.set_num_threads(1)
X = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))


class Multipliers(nn.Module):
    """Stands for the Lagrangian controller: a λ trained beside the model."""

    def __init__(self) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))


def _trainer(run_dir, max_steps=6) -> Trainer:
    torch.manual_seed(0)
    model, multipliers = nn.Linear(3, 1), Multipliers()

    def step_fn(m, batch):
        task = (m(batch) - batch.sum(1, keepdim=True)).pow(2).mean()
        return task + multipliers.lambda1 * 0.1, {"loss_task": task}

    return Trainer(
        model,
        TrainerConfig(max_steps=max_steps, lr=0.05, warmup_steps=0, log_every=2, eval_every=3, progress=False),
        step_fn,
        [X[:6], X[6:]],
        param_groups=[{"params": [multipliers.lambda1], "lr": -0.1, "name": "lagrangian"}],
        modules={"lagrangian": multipliers},
        eval_fn=lambda m: {"dev_wer": float(m(X).abs().mean())},
        record_fn=lambda m: {
            "expected_sparsity": float(m.weight.abs().mean()),
            "lambda1": float(multipliers.lambda1),
            "gates": {"a": [0.5, 0.7]},
        },
        run_dir=run_dir,
    )


def _events(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_trainer_writes_losses_lr_sparsity_lambda_and_dev_wer_as_in_its_history(tmp_path, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, str(tmp_path / "tb"))
    trainer = _trainer(tmp_path / "run")
    history = trainer.fit()
    events = _events(tmp_path / "tb" / "run")
    for kind, key in [
        ("train", "loss"),
        ("train", "loss_task"),
        ("train", "lr"),
        ("train", "lr/lagrangian"),
        ("record", "expected_sparsity"),
        ("record", "lambda1"),
        ("eval", "dev_wer"),
    ]:
        steps, values = history.series(kind, key)
        assert steps, f"history has no {kind} {key}"
        logged = events[f"{kind}/{key}"]
        assert [s for s, _ in logged] == steps
        assert [v for _, v in logged] == pytest.approx(values, rel=1e-6)
    assert not any(tag.startswith("record/gates") for tag in events), "per-unit lists stay in history.json"
    assert events["record/lambda1"][-1][1] != 0.0, "λ moved during training"


def test_resumed_run_continues_its_event_lines_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, str(tmp_path / "tb"))
    first = _trainer(tmp_path / "run", max_steps=4)
    first.fit()
    resumed = _trainer(tmp_path / "run", max_steps=6)
    resumed.load_checkpoint()
    history = resumed.fit()
    steps = [s for s, _ in _events(tmp_path / "tb" / "run")["train/loss"]]
    assert steps == history.series("train", "loss")[0] == [2, 4, 6]


def test_no_events_without_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    _trainer(tmp_path / "run").fit()
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_progress_bar_shows_the_last_dev_wer(tmp_path, monkeypatch):
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    trainer = _trainer(None)
    trainer.fit()
    postfix = trainer._progress_postfix()
    assert postfix["dev_wer"] == f"{trainer.history.last('eval')['dev_wer']:.1%}"
    assert set(postfix) == {"loss", "lr", "dev_wer"}


@pytest.mark.parametrize(
    "command",
    ["pretrain", "finetune", "compress --method l0 --target-sparsity 0.3", "joint --method l0 --target-sparsity 0.3"],
)
def test_every_training_command_takes_tensorboard_and_passes_it_to_its_runs(command, tmp_path, monkeypatch):
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    args = build_parser().parse_args([*command.split(), "--tensorboard", str(tmp_path / "tb")])
    apply_training_options(args)
    assert os.environ[TENSORBOARD_ENV] == str((tmp_path / "tb").resolve())


def test_scalars_flatten_nested_numbers_and_skip_lists_and_non_finite():
    record = {"kind": "record", "step": 3, "ranks": {"q": 4.0}, "gates": {"a": [1.0]}, "x": float("nan"), "ok": True}
    assert scalars(record) == {"ranks/q": 4.0}


def test_run_folders_under_runs_keep_their_relative_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLAB_HOME", str(tmp_path))
    assert (
        run_log_folder(tmp_path / "tb", tmp_path / "runs" / "teacher" / "finetune")
        == tmp_path / "tb" / "teacher" / "finetune"
    )
    assert run_log_folder(tmp_path / "tb", tmp_path / "elsewhere" / "r1") == tmp_path / "tb" / "r1"
