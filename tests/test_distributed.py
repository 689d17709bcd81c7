"""Data-parallel training under torchrun (CPU, gloo, 2 processes): a tiny fine-tune ends with the
same weights on both ranks, only rank 0 writes run files, and a run stopped by SIGTERM resumes to
the very weights of an uninterrupted one. Each rank is tests/ddp_worker.py (it reports what it
wrote and the weights it holds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.paths import PROJECT_ROOT

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 6
FINETUNE = [
    "finetune",
    "--profile",
    "tiny",
    "--init",
    "random",
    "--device",
    "cpu",
    "--steps",
    str(STEPS),
    "--no-progress",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A KDLAB_HOME holding the tiny corpus (shared with the other tests)."""
    from stand_ins import isolated_kdlab_home

    from kdlab.data.corpus import ensure_corpus

    root = tmp_path_factory.mktemp("home")
    isolated_kdlab_home(root, ensure_corpus("tiny", progress=False)).undo()  # the folder, not the env, is needed
    return root


def torchrun(home: Path, watch: Path, out: Path, arguments: list[str], stop_at: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KDLAB_HOME": str(home),
        "DDP_TEST_WATCH": str(watch),
        "DDP_TEST_OUT": str(out),
        "DDP_TEST_STOP_AT": str(stop_at),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        *arguments,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=out.parent, timeout=600)


def _weights(out: Path, rank: int) -> dict:
    return torch.load(out / f"weights-{rank}.pt", weights_only=True)


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], dict):
            _assert_same(a[name], b[name], f"{what}.{name}")
        else:
            assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(b[name])), f"{what}.{name} differs"


@pytest.fixture(scope="module")
def uninterrupted(home, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ddp-full")
    watch, out = base / "runs", base / "report"
    result = torchrun(home, watch, out, [*FINETUNE, "--run-dir", str(watch / "finetune")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return watch / "finetune", out


def test_both_ranks_end_with_identical_weights(uninterrupted):
    run_dir, out = uninterrupted
    rank0, rank1 = _weights(out, 0), _weights(out, 1)
    assert rank0["step"] == rank1["step"] == STEPS
    _assert_same(rank0, rank1, "rank 0 vs rank 1")
    saved = torch.load(run_dir / "asr.pt", weights_only=True)["model"]
    _assert_same(saved, rank0["model"], "asr.pt vs rank 0")


def test_only_rank_0_writes_run_files(uninterrupted):
    run_dir, out = uninterrupted
    written0 = set(json.loads((out / "writes-0.json").read_text()))
    written1 = json.loads((out / "writes-1.json").read_text())
    assert written1 == [], f"rank 1 wrote {written1}"
    for name in ("config.json", "history.json", "checkpoints/last.pt", "asr.pt", "result.json"):
        assert f"finetune/{name}" in written0, f"rank 0 did not write {name}: {sorted(written0)}"


def test_gates_and_lagrange_multipliers_stay_identical_across_ranks(home, tmp_path):
    """The joint route's moving parts (hard-concrete gates in the model, λ in the controller module)."""
    watch, out = tmp_path / "runs", tmp_path / "report"
    result = torchrun(home, watch, out, ["l0-toy", str(watch / "l0")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rank0, rank1 = _weights(out, 0), _weights(out, 1)
    _assert_same(rank0, rank1, "rank 0 vs rank 1")
    assert float(rank0["modules"]["lagrangian"]["lambda_1"]) != 0.0, "λ1 was trained"
    init = torch.full((8,), math.log(0.9 / 0.1))
    assert not torch.allclose(rank0["model"]["gate.log_alpha"], init), "the gates were trained"
    assert json.loads((out / "writes-1.json").read_text()) == []


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(uninterrupted, home, tmp_path):
    _, full_out = uninterrupted
    watch, out = tmp_path / "runs", tmp_path / "report"
    arguments = [*FINETUNE, "--run-dir", str(watch / "finetune")]
    stopped = torchrun(home, watch, out, arguments, stop_at=4)
    assert stopped.returncode != 0, "SIGTERM at step 4 should end the run early"
    checkpoint = torch.load(watch / "finetune" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2 and len(checkpoint["rng_per_rank"]) == 2
    assert not (watch / "finetune" / "result.json").exists()

    resumed = torchrun(home, watch, out, arguments)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    _assert_same(_weights(out, 0), _weights(out, 1), "resumed rank 0 vs rank 1")
    _assert_same(_weights(out, 0), _weights(full_out, 0), "resumed vs uninterrupted")
    steps = [r["step"] for r in json.loads((watch / "finetune" / "history.json").read_text()) if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


def test_a_joint_l0_run_keeps_the_ranks_in_step_and_only_rank_0_writes(home, tmp_path):
    """The joint route under torchrun: gated training, materialisation and recovery on both ranks,
    evaluation and the run's files on rank 0 alone."""
    watch, out = tmp_path / "runs", tmp_path / "report"
    arguments = ["joint", "--profile", "tiny", "--method", "l0", "--target-sparsity", "0.3", "--steps", "6"]
    arguments += ["--ctc-steps", "2", "--recovery-steps", "2", "--device", "cpu", "--no-progress"]
    result = torchrun(home, watch, out, [*arguments, "--run-dir", str(watch / "joint")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rank0, rank1 = _weights(out, 0), _weights(out, 1)  # the recovery trainer: the materialised student
    _assert_same(rank0, rank1, "rank 0 vs rank 1")
    assert json.loads((out / "writes-1.json").read_text()) == []
    written0 = set(json.loads((out / "writes-0.json").read_text()))
    for name in ("config.json", "asr.pt", "result.json", "test_transcripts.jsonl"):
        assert f"joint/{name}" in written0, f"rank 0 did not write {name}: {sorted(written0)}"
    assert json.loads((watch / "joint" / "result.json").read_text())["route"] == "joint"


def test_processes_option_relaunches_the_same_command_under_torchrun_once(monkeypatch):
    """`--processes 2` hands the unchanged command to torchrun (2 local processes, one thread each by
    default); inside torchrun (WORLD_SIZE set) the command runs instead of relaunching; study has no
    such option (its --workers parallelise a grid)."""
    from kdlab import cli

    launched = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda command, env: launched.append((command, env)) or subprocess.CompletedProcess(command, 3),
    )
    argv = ["finetune", "--profile", "tiny", "--processes", "2", "--steps", "3"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 3  # torchrun's exit code is the command's
    ((command, env),) = launched
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "kdlab", *argv]
    assert env["OMP_NUM_THREADS"] == "1"

    ran = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("kdlab.commands.finetune.run", lambda args: ran.append(args.processes))
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert ran == [2] and len(launched) == 1
    with pytest.raises(SystemExit):
        cli.main(["study", "--processes", "2"])
