"""Data-parallel training under `torchrun` (one process per CPU slot or GPU), for every trainer.

    torchrun --nproc-per-node 2 -m kdlab finetune --profile tiny --init random
    python -m kdlab finetune --profile tiny --init random --processes 2   # the same, torchrun started for you

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; `kdlab.train.trainer.Trainer` then
joins the process group (gloo on CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo when
ranks share a GPU) and:

- shards the batches: the bucketed sampler packs batches of ``frames_per_batch / N`` frames and
  rank r takes batches r, r + N, ... (`shard_data`), so one step over the N ranks trains on a batch
  of the profile's ``frames_per_batch``, as one process does;
- starts every rank from rank 0's weights and buffers (`broadcast_from_main`), averages the
  gradients of every optimised parameter over the ranks after each backward
  (`average_gradients`: model weights, hard-concrete gates and Lagrange multipliers alike; a
  parameter without a gradient on one rank counts as zero there) and re-broadcasts buffers
  (BatchNorm statistics) each step, as DDP does, so all ranks hold identical weights, gates and λ;
- agrees on what every rank must do together (skip a non-finite step, save a checkpoint, stop at
  a signal: `agree`) and averages the logged metrics over the ranks (`average_values`);
- writes run files (history, config, checkpoints, TensorBoard) on rank 0 only; a checkpoint holds
  every rank's RNG state (`gather_objects`), so a resumed run continues each rank exactly.

Recipes keep their own files to rank 0 with `is_main_process()` and `barrier()`.
Explicit all-reduces (not `DistributedDataParallel`) keep step functions free to call any part
of the model; they do not overlap communication with the backward pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started with more than one process in the run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_active() -> bool:
    """True once this process has joined a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if is_active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes training together (1 without torchrun)."""
    return dist.get_world_size() if is_active() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (and without torchrun): the process that writes the run's files."""
    return rank() == 0


def _gpus_shared() -> bool:
    """More processes on this machine than GPUs (e.g. a 2-process check on one GPU)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > torch.cuda.device_count()


def local_cuda_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (made the current device): one GPU per process on a machine; with more
    processes than GPUs they share them round robin."""
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def join(device: torch.device) -> None:
    """Join torchrun's process group (once per process): NCCL when each process has its own GPU,
    else gloo (CPU, or processes sharing a GPU, which NCCL refuses)."""
    if launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" and not _gpus_shared() else "gloo")


def barrier() -> None:
    """Wait for every rank (no-op without torchrun)."""
    if is_active():
        dist.barrier()


def shard_data(data: Any) -> None:
    """Make `data` (a `SpeechLoader` or anything whose ``batch_sampler`` has ``shard``) yield only
    this rank's batches; ValueError for data that cannot be sharded."""
    sampler = getattr(data, "batch_sampler", data)
    if not hasattr(sampler, "shard"):
        raise ValueError(
            f"cannot shard {type(data).__name__} over {world_size()} processes: train on a "
            "kdlab SpeechLoader (its BucketBatchSampler shards by rank), or run without torchrun"
        )
    sampler.shard(world_size(), rank())


def broadcast_from_main(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite `tensors` (parameters, buffers) on every rank with rank 0's values."""
    if is_active():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the ranks, in one all-reduce per device and
    dtype. A parameter without a gradient on some ranks counts as zero there; one without a gradient
    on every rank keeps none (the optimizer skips it, as without torchrun)."""
    if not is_active():
        return
    has_grad = agree([p.grad is not None for p in parameters], how="any")
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p, used in zip(parameters, has_grad):
        if not used:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        groups.setdefault((p.device, p.dtype), []).append(p)
    for params in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree(flags: Sequence[bool], how: str = "any") -> list[bool]:
    """Each flag decided together: true on every rank if true on any rank (``how="any"``) or on all (``"all"``)."""
    if not is_active():
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=_collective_device())
    dist.all_reduce(values, op=dist.ReduceOp.MAX if how == "any" else dist.ReduceOp.MIN)
    return [bool(v) for v in values.tolist()]


def average_values(values: dict[str, float]) -> dict[str, float]:
    """`values` (the same keys on every rank) averaged over the ranks."""
    if not is_active() or not values:
        return values
    keys = sorted(values)
    summed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(summed)
    return {k: v / world_size() for k, v in zip(keys, summed.tolist())}


def gather_objects(value: Any) -> list:
    """[value of rank 0, rank 1, ...] on every rank (picklable values; [value] without torchrun)."""
    if not is_active():
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered
