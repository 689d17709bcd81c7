"""A compression run killed half-way (kill -9) and run again ends exactly where an uninterrupted
run ends, and its wall time covers both processes (issue 16, acceptance 3)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from stand_ins import isolated_kdlab_home

from kdlab.commands._compression_args import budget_warning
from kdlab.data.corpus import ensure_corpus
from kdlab.paths import PROJECT_ROOT
from kdlab.train.recipes.compress import load_compress
from kdlab.train.recipes.pretrain import PretrainConfig, run_pretrain

STEPS = 60  # tiny profile: a checkpoint every 10 steps


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    corpus = ensure_corpus("tiny", progress=False)
    root = tmp_path_factory.mktemp("resume")
    patch = isolated_kdlab_home(root, corpus)
    run_pretrain(PretrainConfig.for_profile("tiny"), device="cpu", progress=False)  # the teacher, once
    yield root
    patch.undo()


def compress_command(run_dir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kdlab",
        "compress",
        "--profile",
        "tiny",
        "--method",
        "kd+l0",
        "--target-sparsity",
        "0.25",
        "--steps",
        str(STEPS),
        "--device",
        "cpu",
        "--no-progress",
        "--run-dir",
        str(run_dir),
    ]


def environment(home) -> dict:
    return {**os.environ, "KDLAB_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}


def logged_step(run_dir) -> int:
    try:
        records = json.loads((run_dir / "history.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return 0
    return max((r["step"] for r in records if r.get("kind") == "train"), default=0)


def test_a_compression_killed_half_way_resumes_to_the_uninterrupted_result(home):
    env = environment(home)
    reference = home / "uninterrupted"
    subprocess.run(compress_command(reference), env=env, check=True, capture_output=True)

    interrupted = home / "interrupted"
    process = subprocess.Popen(
        compress_command(interrupted), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while logged_step(interrupted) < STEPS // 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (interrupted / "result.json").exists(), "the run finished before it could be killed"
    checkpoint = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < checkpoint["step"] < STEPS
    first_part = checkpoint["elapsed_seconds"]["wall"]

    done = subprocess.run(compress_command(interrupted), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    ours, theirs = load_compress(interrupted), load_compress(reference)
    assert ours.metrics["steps"] == theirs.metrics["steps"] == STEPS
    for (name, a), (_, b) in zip(ours.encoder.state_dict().items(), theirs.encoder.state_dict().items()):
        assert torch.equal(a, b), name
    assert ours.metrics["achieved_sparsity"] == theirs.metrics["achieved_sparsity"]
    assert ours.metrics["final_loss_distill"] == theirs.metrics["final_loss_distill"]
    assert ours.history.records == theirs.history.records
    # wall time: the killed process's training up to its checkpoint, then this process's part
    assert ours.metrics["wall_seconds_before_resume"] == pytest.approx(first_part) and first_part > 0
    assert ours.metrics["wall_seconds"] > first_part
    assert theirs.metrics["wall_seconds_before_resume"] == 0
    # --calibrate-budget is on by default: the command line's run meets its budget, no warning
    assert budget_warning(ours.metrics["achieved_sparsity"], 0.25) is None
    assert "warning" not in done.stderr
