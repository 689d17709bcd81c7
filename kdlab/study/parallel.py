"""Train the grid's recipe runs side by side in worker processes, before the rows are measured.

    train_runs(config, plan, workers=2)     # then run_study finds every run complete ("reused")

On a CPU, processes with one torch thread each train more steps per second than one process
with all the threads (small conformers do not scale across threads: docs/cpu_timings.md). The
grid is a graph of recipe runs (``tasks``):

    pretrain                        the SSL encoder every compression starts from
    teacher/<mode>                  after pretrain; the reference rows (and joint rows distilling it);
                                    teacher/streaming after teacher/offline when it starts from it
    compress/<method>/<t>/s<seed>   after pretrain; shared by both modes' sequential rows
    row/<key>                       scratch rows: no dependency; sequential: after its compression;
                                    joint: after pretrain (the SSL encoder it starts from), and
                                    after its mode's teacher when it distils the fine-tuned teacher

``train_runs`` starts ready tasks, longest chains first (the teachers), in ``workers`` spawned
processes with ``threads_per_worker`` torch threads each; worker i trains on
``kdlab.train.devices.worker_device(device, i)`` (one GPU each, round robin, on a multi-GPU
machine); with ``processes_per_run`` K > 1 each run trains data-parallel under torchrun, worker i's
K processes on GPUs i·K .. i·K + K - 1 (``study --gpus-per-run``). Every recipe reuses a complete run
folder, so a task that is already done returns at once, and an interrupted study resumes.
Nothing is measured here: latency is measured afterwards in the main process, on an idle CPU.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from kdlab.study.config import StudyConfig
from kdlab.study.plan import SCRATCH, TEACHER, RowSpec
from kdlab.train.recipes.profiles import get_profile

PRETRAIN = "pretrain"


@dataclass(frozen=True)
class Task:
    """One recipe run: ``name`` (unique), what it needs first (``after``), and its payload: the row
    it trains (``row``) or, for shared runs, ``kind`` with ``mode`` / ``method`` settings."""

    name: str
    after: tuple[str, ...]
    kind: str
    row: RowSpec | None = None
    mode: str | None = None
    method: str | None = None
    target: float | None = None
    seed: int | None = None


def _compress_name(spec: RowSpec) -> str:
    return f"compress/{spec.method}/{spec.target_sparsity:g}/s{spec.seed}"


def tasks(plan: list[RowSpec], joint_kd_source: str = "ssl", streaming_teacher_init: str = "ssl") -> list[Task]:
    """The runs behind ``plan``, each once, teachers and compressions before the rows that need them
    (joint kd rows need their mode's teacher with ``joint_kd_source`` "finetuned"; the streaming
    teacher needs the offline one with ``streaming_teacher_init`` "offline", the profile's)."""
    out: dict[str, Task] = {PRETRAIN: Task(PRETRAIN, (), PRETRAIN)}

    def add_teacher(mode: str) -> str:
        name = f"teacher/{mode}"
        after = (PRETRAIN,)
        if mode == "streaming" and streaming_teacher_init == "offline":
            after = (PRETRAIN, add_teacher("offline"))
        out.setdefault(name, Task(name, after, TEACHER, mode=mode))
        return name

    for spec in plan:
        if spec.method == TEACHER:
            add_teacher(spec.mode)
        elif spec.method == SCRATCH:
            out[f"row/{spec.key}"] = Task(f"row/{spec.key}", (), "row", row=spec)
        elif spec.route == "sequential":
            compress = _compress_name(spec)
            out.setdefault(
                compress,
                Task(
                    compress, (PRETRAIN,), "compress", method=spec.method, target=spec.target_sparsity, seed=spec.seed
                ),
            )
            out[f"row/{spec.key}"] = Task(f"row/{spec.key}", (compress,), "row", row=spec)
        else:
            distils = joint_kd_source == "finetuned" and "kd" in spec.method.split("+")
            after = (PRETRAIN, add_teacher(spec.mode)) if distils else (PRETRAIN,)
            out[f"row/{spec.key}"] = Task(f"row/{spec.key}", after, "row", row=spec)
    return list(out.values())


_worker_index = 0  # this worker process's number (0 .. workers - 1), set by `_claim_index`


def _claim_index(indices) -> None:
    """Pool initializer: take this worker's number from the queue of free numbers."""
    global _worker_index
    _worker_index = indices.get()


def current_worker_index() -> int:
    """The number of the worker process this runs in (0 outside a pool)."""
    return _worker_index


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes (fresh interpreters: no forked torch thread pools), numbered 0 .. workers - 1."""
    context = multiprocessing.get_context("spawn")
    indices = context.Queue()
    for index in range(workers):
        indices.put(index)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_claim_index, initargs=(indices,))


def run_task(config: dict, task: Task, threads: int, device: str, processes_per_run: int = 1) -> float:
    """Run one task with ``threads`` torch threads on this worker's device, in this process or, with
    ``processes_per_run`` > 1, data-parallel under torchrun (``run_task_under_torchrun``); its wall seconds."""
    start = time.perf_counter()
    if processes_per_run > 1:
        run_task_under_torchrun(config, task, threads, device, processes_per_run)
    else:
        from kdlab.train.devices import worker_device

        run_task_here(config, task, threads, worker_device(device, current_worker_index()))
    return time.perf_counter() - start


def run_task_here(config: dict, task: Task, threads: int, device: str) -> None:
    """Run one task in this process with ``threads`` torch threads on ``device``."""
    import torch

    from kdlab.study.recipes import GridRuns

    torch.set_num_threads(threads)
    runs = GridRuns(StudyConfig.from_dict(config), device, progress=False)
    if task.kind == PRETRAIN:
        runs.ssl_teacher()
    elif task.kind == TEACHER:
        runs.teacher(task.mode)
    elif task.kind == "compress":
        from kdlab.train.recipes.compress_teacher import compress_profile

        compress_profile(runs.compress_config(task.method, task.target, task.seed), device=device, progress=False)
    else:
        runs.run(task.row)


def run_task_under_torchrun(config: dict, task: Task, threads: int, device: str, processes: int) -> None:
    """Run one task as `processes` data-parallel ranks (``kdlab.study.task_runner`` under torchrun),
    on this worker's GPUs (``worker_gpus``: CUDA_VISIBLE_DEVICES, rank r on the r-th) or on the CPU
    with ``threads`` threads per rank; RuntimeError with the end of its output when it fails."""
    import os
    import pickle
    import subprocess
    import sys
    import tempfile

    from kdlab.train.devices import worker_gpus

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    gpus = worker_gpus(current_worker_index(), processes)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    with tempfile.TemporaryDirectory(prefix="kdlab-task-") as folder:
        task_file = os.path.join(folder, "task.pickle")
        with open(task_file, "wb") as handle:
            pickle.dump((config, task, threads, device), handle)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        done = subprocess.run(
            [*command, "-m", "kdlab.study.task_runner", task_file], env=env, capture_output=True, text=True
        )
    if done.returncode != 0:
        raise RuntimeError(f"{task.name} failed under torchrun ({processes} processes):\n{done.stderr[-3000:]}")


def _priority(task: Task) -> int:
    """Teachers first (the longest chains), then compressions (they unblock two rows each), then rows."""
    return {TEACHER: 0, PRETRAIN: 0, "compress": 1}.get(task.kind, 2)


def train_runs(
    config: StudyConfig,
    plan: list[RowSpec],
    workers: int = 2,
    threads_per_worker: int = 1,
    device: str = "auto",
    log: Callable[[str], None] = print,
    processes_per_run: int = 1,
) -> dict[str, float]:
    """Train every run of ``plan`` in ``workers`` processes (module docstring), each run in
    ``processes_per_run`` data-parallel processes (``run_task``); {task name: wall seconds}. A task
    that raises starts nothing more: once the running ones have finished, RuntimeError names it,
    with the worker's error."""
    if workers < 1 or threads_per_worker < 1 or processes_per_run < 1:
        raise ValueError(
            f"need workers, threads_per_worker and processes_per_run >= 1, got {workers}, {threads_per_worker} "
            f"and {processes_per_run}"
        )
    streaming_init = get_profile(config.profile).streaming_teacher_init
    pending = sorted(tasks(plan, config.joint_kd_source, streaming_init), key=_priority)
    done: dict[str, float] = {}
    running: dict[Future, Task] = {}
    data = config.to_dict()
    with worker_pool(workers) as pool:
        while pending or running:
            ready = [t for t in pending if all(name in done for name in t.after)]
            if not ready and not running:
                raise RuntimeError(f"study tasks wait on runs that never come: {[t.name for t in pending]}")
            for task in ready[: workers - len(running)]:
                pending.remove(task)
                running[pool.submit(run_task, data, task, threads_per_worker, device, processes_per_run)] = task
                log(f"  started {task.name}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    done[task.name] = future.result()
                except Exception as error:  # the runs already started finish (kept for the next attempt)
                    log(f"  {task.name} failed: {error!r}; waiting for {len(running)} running run(s) to finish")
                    raise RuntimeError(f"study task {task.name} failed in its worker: {error!r}") from error
                log(
                    f"  finished {task.name} in {done[task.name]:.0f} s ({len(done)} of "
                    f"{len(done) + len(pending) + len(running)} runs)"
                )
    return done
