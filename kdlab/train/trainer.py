"""The step-based trainer every recipe uses.

    trainer = Trainer(model, TrainerConfig(max_steps=2000, lr=1e-3), step_fn, loader,
                      param_groups=[{"params": gates, "lr": 0.05, "scheduled": False, "name": "gates"}],
                      eval_fn=dev_wer, run_dir="runs/teacher")
    history = trainer.fit()

Each step: ``loss, metrics = step_fn(model, batch)`` -> finiteness check -> backward -> gradient
clipping of the model's parameters (the norm before clipping is logged as ``grad_norm``) ->
learning rates for this step -> AdamW step. ``step`` counts loop iterations (skipped ones too).

* Parameter groups: the model's trainable parameters that no extra group claims form the first
  group ("model", ``lr``/``weight_decay`` of the config). Extra groups are dicts with ``params``
  and optional ``lr``, ``weight_decay``, ``name`` and ``scheduled`` (default True: the warm-up +
  decay factor applies; False: constant ``lr``). Parameters of an extra group that live outside
  the model (e.g. Lagrange multipliers) must belong to one of ``modules`` so that checkpoints hold
  them; they must already be on the trainer's device (``resolve_device(config.device)``).
* Non-finite loss or gradient norm: ``nonfinite="skip"`` drops the step (no update, counted in
  ``skipped``; more than ``max_skips`` raises), ``"stop"`` raises ``NonFiniteLossError`` at once.
* History: every ``log_every`` steps a "train" record (means since the last log, lr of each
  group, epoch, skipped count) and, if ``record_fn`` is given, a "record" record with its values;
  every ``eval_every`` steps (and at the end) an "eval" record from ``eval_fn(model)`` (model in
  eval mode, no grad). Callbacks run with isolated RNG state, so they never change the training
  run. Saved to ``run_dir/history.json``; each new record also goes to the ``listeners``
  (callables taking the record dict), and to TensorBoard when ``$KDLAB_TENSORBOARD`` is set
  (``kdlab.train.tensorboard_log``). The progress bar shows the last loss, lr and dev WER.
* Checkpoints (``run_dir/checkpoints/last.pt``, every ``checkpoint_every`` steps, after
  ``checkpoint_seconds`` of training since the last one, at the end, and at SIGTERM / Ctrl-C
  before the signal acts; atomic): model, optimizer (with per-group lr), extra modules, step, RNG
  states, data position (epoch, batches taken), history, skip count, pending log sums, the trainer
  config and the caller's ``configs``, and the wall / CPU seconds trained so far: ``elapsed()``
  adds up every process that worked on the run (``resumed_seconds``: those before this one). The
  learning-rate schedule is a function of the step, so it needs no state of its own.
  ``load_checkpoint`` then ``fit`` continue the exact run: on CPU the final weights and history
  equal those of an uninterrupted run bit for bit (CUDA kernels may be
  non-deterministic).
* Data-parallel under torchrun (``kdlab.train.distributed``): batches sharded by rank, gradients
  of every optimised parameter averaged, buffers broadcast from rank 0, run files written by rank 0
  only, every rank's RNG state in the checkpoint (resume with the same number of processes).
* Same seed => same numbers: ``fit`` seeds Python, NumPy and torch with ``seed`` when it starts
  a fresh run (step 0); build the model after ``seed_everything(seed)`` too, for identical
  initial weights.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdlab.config import JsonConfig
from kdlab.train import distributed
from kdlab.train.checkpoint import load_checkpoint, save_checkpoint
from kdlab.train.epochs import EpochIterator
from kdlab.train.history import History
from kdlab.train.precision import autocast, check_precision, default_precision
from kdlab.train.rng import capture_rng_state, isolated_rng, restore_rng_state, seed_everything
from kdlab.train.schedule import SCHEDULES, apply_lr, lr_factor
from kdlab.train.stop_signals import StopSignals

StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict]]
CHECKPOINT_VERSION = 1
#: Config fields that may differ when resuming (they do not change the numbers of past steps).
RESUMABLE_CHANGES = {
    "max_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "checkpoint_seconds",
    "device",
    "nonfinite",
    "max_skips",
    "progress",
}
#: Device types on which AdamW runs its fused kernel (elsewhere: its per-tensor loop).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")
_RESERVED = {"step", "epoch", "lr", "grad_norm", "skipped", "kind", "loss"}


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite."""


@dataclass
class TrainerConfig(JsonConfig):
    """Optimisation and bookkeeping settings (JSON-serialisable; stored in every checkpoint).

    ``eval_every`` / ``checkpoint_every`` = 0: only at the end; ``checkpoint_seconds``: also after
    that much training time since the last checkpoint (0: never). ``grad_clip`` = 0: no clipping.
    ``device``: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". ``precision``: "fp32" or
    "bf16" (autocast of the step's forward pass, ``kdlab.train.precision``; default ``$KDLAB_PRECISION``).
    """

    max_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "noam"
    min_lr_ratio: float = 0.0
    grad_clip: float = 5.0
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    checkpoint_seconds: float = 300.0
    seed: int = 0
    device: str = "auto"
    nonfinite: str = "skip"
    max_skips: int = 10
    progress: bool = True
    precision: str = field(default_factory=default_precision)

    def __post_init__(self) -> None:
        self.betas = [float(b) for b in self.betas]
        check_precision(self.precision)
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "max_skips"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {self.log_every!r}")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, grad_clip >= 0; got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, grad_clip={self.grad_clip}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.nonfinite not in ("skip", "stop"):
            raise ValueError(f"nonfinite must be 'skip' or 'stop', got {self.nonfinite!r}")


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available else CPU; "cpu" / "cuda" / "cuda:N" as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is None and distributed.launched_by_torchrun():
        return distributed.local_cuda_device()
    return device


def move_to(batch, device: torch.device):
    """Batch (anything with ``.to``, or tuples / lists / dicts of them) on `device`; other values unchanged."""
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Step loop with param groups, schedule, clipping, history, evaluation and exact resume.

    Args:
        model: the module trained (moved to the device).
        config: optimisation settings.
        step_fn: ``step_fn(model, batch) -> (loss scalar tensor, metrics dict of scalars)``.
        train_data: re-iterable batches (DataLoader, SpeechLoader, list); see ``EpochIterator``.
        param_groups: extra AdamW groups (see the module docstring).
        modules: other stateful modules to checkpoint, by name (e.g. {"lagrangian": controller}).
        eval_fn: ``eval_fn(model) -> dict`` of metrics.
        record_fn: ``record_fn(model) -> dict | None`` of extra values to log (e.g. gate probabilities).
        run_dir: where history.json, config.json and checkpoints/ go (None: nothing written).
        configs: JSON-like dicts stored in checkpoints and config.json (model config, tokenizer ...).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        step_fn: StepFn,
        train_data: Iterable,
        *,
        param_groups: list[dict] | None = None,
        modules: dict[str, nn.Module] | None = None,
        eval_fn: Callable[[nn.Module], dict] | None = None,
        record_fn: Callable[[nn.Module], dict | None] | None = None,
        run_dir: str | Path | None = None,
        configs: dict | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        distributed.join(self.device)
        self.model = model.to(self.device)
        self.modules = dict(modules or {})
        self.step_fn, self.eval_fn, self.record_fn = step_fn, eval_fn, record_fn
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.configs = dict(configs or {})
        self.optimizer = self._build_optimizer(param_groups or [])
        self._clip_params = [p for p in model.parameters() if p.requires_grad]
        self.batches = EpochIterator(train_data, config.seed)
        self._optimised = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._buffers = list(self.model.buffers()) + [b for m in self.modules.values() for b in m.buffers()]
        if distributed.is_active():
            distributed.shard_data(train_data)
            extra = [t for m in self.modules.values() for t in m.parameters()]
            distributed.broadcast_from_main([*self.model.parameters(), *extra, *self._buffers])
        self.history = History()
        self.step = 0
        self.skipped = 0
        self._sums: dict[str, float] = {}
        self._count = 0
        #: Wall / CPU seconds of ``fit`` in earlier processes (from the checkpoint) and in this one.
        self.resumed_seconds = {"wall": 0.0, "cpu": 0.0}
        self._seconds = {"wall": 0.0, "cpu": 0.0}
        self._fit_started: dict[str, float] | None = None
        #: Called with every new history record (after it is appended), e.g. a TensorBoard writer.
        self.listeners: list[Callable[[dict], None]] = []

    def elapsed(self) -> dict[str, float]:
        """{"wall", "cpu"}: seconds of training on this run, in every process so far."""
        running = {"wall": 0.0, "cpu": 0.0}
        if self._fit_started is not None:
            running = {
                "wall": time.perf_counter() - self._fit_started["wall"],
                "cpu": time.process_time() - self._fit_started["cpu"],
            }
        return {k: self.resumed_seconds[k] + self._seconds[k] + running[k] for k in running}

    # ----------------------------------------------------------------- setup
    def _build_optimizer(self, param_groups: list[dict]) -> torch.optim.AdamW:
        c = self.config
        extra, claimed = [], set()
        for i, group in enumerate(param_groups):
            if "params" not in group:
                raise ValueError(f"param_groups[{i}] needs a 'params' entry, got keys {sorted(group)}")
            group = {
                "lr": c.lr,
                "weight_decay": c.weight_decay,
                "scheduled": True,
                "name": f"group{i + 1}",
                **group,
                "params": list(group["params"]),
            }
            claimed |= {id(p) for p in group["params"]}
            extra.append(group)
        default = [p for p in self.model.parameters() if p.requires_grad and id(p) not in claimed]
        groups = (
            [{"params": default, "lr": c.lr, "weight_decay": c.weight_decay, "scheduled": True, "name": "model"}]
            if default
            else []
        ) + extra
        if not groups:
            raise ValueError("nothing to train: the model has no trainable parameters and no param_groups were given")
        self._check_extra_params(extra)
        for group in groups:
            group["base_lr"] = group["lr"]
        # the fused kernel updates every tensor in one pass: ~6 % of a small student's CPU step (docs/cpu_timings.md)
        fused = self.device.type in FUSED_ADAMW_DEVICES
        return torch.optim.AdamW(groups, betas=tuple(c.betas), eps=c.eps, fused=fused)

    def _check_extra_params(self, extra: list[dict]) -> None:
        saved = {id(p) for p in self.model.parameters()}
        for module in self.modules.values():
            saved |= {id(p) for p in module.parameters()}
        for group in extra:
            for p in group["params"]:
                if id(p) not in saved:
                    raise ValueError(
                        f"a parameter of group {group['name']!r} (shape {tuple(p.shape)}) is neither in "
                        "the model nor in `modules`: checkpoints would not hold it; pass its module "
                        "as modules={'name': module}"
                    )
                if p.device != self.device:
                    raise ValueError(
                        f"a parameter of group {group['name']!r} is on {p.device}, the trainer on "
                        f"{self.device}: move its module with .to(resolve_device(config.device)) first"
                    )

    # ----------------------------------------------------------------- loop
    def fit(self) -> History:
        """Train until ``config.max_steps`` (continuing from ``self.step``); returns the history."""
        c = self.config
        if self.step == 0:
            seed_everything(c.seed)
        self._write_config()
        self.model.train()
        tensorboard = self._open_tensorboard()
        bar = tqdm(
            total=c.max_steps,
            initial=self.step,
            disable=not c.progress or not distributed.is_main_process(),
            desc="train",
            dynamic_ncols=True,
        )
        self._fit_started = {"wall": time.perf_counter(), "cpu": time.process_time()}
        last_saved = time.perf_counter()
        try:
            with StopSignals() as stop:
                while self.step < c.max_steps:
                    self._train_step(move_to(next(self.batches), self.device))
                    distributed.broadcast_from_main(self._buffers)  # BatchNorm statistics: rank 0's, as DDP
                    self.step += 1
                    bar.update(1)
                    last = self.step == c.max_steps
                    logged = self.step % c.log_every == 0 or last
                    if logged:
                        self._log()
                    if self.eval_fn is not None and ((c.eval_every and self.step % c.eval_every == 0) or last):
                        self._evaluate()
                        logged = True
                    if logged:
                        bar.set_postfix(self._progress_postfix(), refresh=False)
                    timed = bool(c.checkpoint_seconds and time.perf_counter() - last_saved >= c.checkpoint_seconds)
                    timed, stopping = distributed.agree([timed, stop.requested is not None])  # ranks act together
                    due = (c.checkpoint_every and self.step % c.checkpoint_every == 0) or last or timed
                    if self.run_dir is not None and (due or stopping):
                        self.save_checkpoint()
                        last_saved = time.perf_counter()
                    if stopping:  # a rank the signal did not reach stops with the others
                        stop.requested = stop.requested or signal.SIGTERM
                        stop.deliver()
        finally:
            bar.close()
            self._stop_clock()
            if tensorboard is not None:
                self.listeners.remove(tensorboard)
                tensorboard.close()
        distributed.barrier()  # rank 0's last checkpoint and history are on disk for every rank
        return self.history

    def _open_tensorboard(self):
        """A `TensorBoardLog` listening to new records when ``$KDLAB_TENSORBOARD`` is set, else None."""
        from kdlab.train.tensorboard_log import TensorBoardLog, run_log_folder, tensorboard_root

        root = tensorboard_root()
        if root is None or not distributed.is_main_process():
            return None
        log = TensorBoardLog(run_log_folder(root, self.run_dir), purge_step=self.step + 1 if self.step else None)
        self.listeners.append(log)
        return log

    def _append(self, kind: str, values: dict) -> None:
        record = self.history.append(kind, self.step, values)
        for listener in self.listeners:
            listener(record)

    def _progress_postfix(self) -> dict[str, str]:
        """Last loss and lr, and the last dev WER when the evaluation reports one."""
        train, evaluation = self.history.last("train") or {}, self.history.last("eval") or {}
        postfix = {k: f"{train[k]:.4g}" for k in ("loss", "lr") if k in train}
        if isinstance(evaluation.get("dev_wer"), (int, float)):
            postfix["dev_wer"] = f"{evaluation['dev_wer']:.1%}"
        return postfix

    def _stop_clock(self) -> None:
        """Add the seconds since ``fit`` started to this process's total and stop the clock."""
        total = self.elapsed()
        self._fit_started = None
        self._seconds = {k: total[k] - self.resumed_seconds[k] for k in total}

    def _train_step(self, batch) -> None:
        with autocast(self.device, self.config.precision):
            loss, metrics = self.step_fn(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        (finite,) = distributed.agree([bool(torch.isfinite(loss.detach()))], how="all")
        if not finite:
            return self._nonfinite("loss", float(loss.detach()))
        loss.backward()
        distributed.average_gradients(self._optimised)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._clip_params, max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._nonfinite("gradient norm", grad_norm)
        apply_lr(
            self.optimizer,
            lr_factor(
                self.step,
                self.config.schedule,
                self.config.warmup_steps,
                self.config.max_steps,
                self.config.min_lr_ratio,
            ),
        )
        self.optimizer.step()
        self._accumulate(loss, grad_norm, metrics)

    def _nonfinite(self, what: str, value: float) -> None:
        c = self.config
        if c.nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite {what} ({value}) at step {self.step + 1}: lower the learning rate, "
                "check grad_clip and the data, or set nonfinite='skip' to drop such steps"
            )
        self.skipped += 1
        if self.skipped > c.max_skips:
            raise NonFiniteLossError(
                f"{self.skipped} steps had a non-finite loss or gradient (max_skips="
                f"{c.max_skips}), the last one ({what} = {value}) at step {self.step + 1}: "
                "training is diverging; lower the learning rate or check the data"
            )

    def _accumulate(self, loss: torch.Tensor, grad_norm: float, metrics: dict) -> None:
        reserved = _RESERVED & set(metrics)
        if reserved:
            raise ValueError(f"step_fn metrics may not use the reserved names {sorted(reserved)}")
        for key, value in {"loss": loss, "grad_norm": grad_norm, **metrics}.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def _log(self) -> None:
        groups = self.optimizer.param_groups
        values = {"epoch": self.batches.epoch, "lr": groups[0]["lr"], "skipped": self.skipped}
        values.update({f"lr/{g['name']}": g["lr"] for g in groups[1:]})
        values.update(
            distributed.average_values({k: v / self._count for k, v in self._sums.items()}) if self._count else {}
        )
        self._sums, self._count = {}, 0
        self._append("train", values)
        if self.record_fn is not None:
            with isolated_rng(), torch.no_grad():
                extra = self.record_fn(self.model)
            if extra:
                self._append("record", extra)
        self._save_history()

    def _evaluate(self) -> None:
        self.model.eval()
        try:
            with isolated_rng(), torch.no_grad():
                metrics = self.eval_fn(self.model)
        finally:
            self.model.train()
        self._append("eval", metrics)
        self._save_history()

    # ----------------------------------------------------------------- files
    def _save_history(self) -> None:
        if self.run_dir is not None and distributed.is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.history.save(self.run_dir / "history.json")

    def _write_config(self) -> None:
        if self.run_dir is not None and distributed.is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"trainer": self.config.to_dict(), **self.configs}, indent=1)
            (self.run_dir / "config.json").write_text(text)

    def default_checkpoint_path(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this trainer has no run_dir: pass a checkpoint path explicitly")
        return self.run_dir / "checkpoints" / "last.pt"

    def state_dict(self) -> dict:
        """Everything needed to continue the run exactly (see the module docstring)."""
        return {
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "rng": capture_rng_state(),
            "world_size": distributed.world_size(),
            "rng_per_rank": distributed.gather_objects(capture_rng_state()),
            "data": self.batches.state_dict(),
            "history": self.history.records,
            "skipped": self.skipped,
            "pending_log": {"sums": dict(self._sums), "count": self._count},
            "trainer_config": self.config.to_dict(),
            "configs": self.configs,
            "elapsed_seconds": self.elapsed(),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the run state atomically (default ``run_dir/checkpoints/last.pt``); under torchrun
        every rank calls it (their RNG states are gathered) and rank 0 writes."""
        state, path = self.state_dict(), Path(path or self.default_checkpoint_path())
        return save_checkpoint(state, path) if distributed.is_main_process() else path

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Restore a run written by `save_checkpoint`; ``fit()`` then continues it.

        The trainer must be built like the original one (same model, groups, modules); config
        fields outside ``RESUMABLE_CHANGES`` must be equal.
        """
        state = load_checkpoint(path or self.default_checkpoint_path())
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} is not {CHECKPOINT_VERSION}")
        saved, current = state["trainer_config"], self.config.to_dict()
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(
                f"cannot resume exactly: trainer config differs from the checkpoint's ({details}); "
                f"only {sorted(RESUMABLE_CHANGES)} may change"
            )
        processes = int(state.get("world_size", 1))
        if processes != distributed.world_size():
            raise ValueError(
                f"the checkpoint was written by a run of {processes} process(es), this one has "
                f"{distributed.world_size()}: resume with torchrun --nproc-per-node {processes} "
                "(the data order depends on it)"
            )
        missing = set(self.modules) ^ set(state["modules"])
        if missing:
            raise ValueError(f"modules differ from the checkpoint's: {sorted(missing)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        self.batches.load_state_dict(state["data"])
        self.history = History(state["history"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self._sums, self._count = dict(state["pending_log"]["sums"]), int(state["pending_log"]["count"])
        per_rank = state.get("rng_per_rank")
        restore_rng_state(per_rank[distributed.rank()] if per_rank else state["rng"])
        self.resumed_seconds = dict(state.get("elapsed_seconds", {"wall": 0.0, "cpu": 0.0}))
        self._seconds = {"wall": 0.0, "cpu": 0.0}
