"""Compression of the SSL teacher encoder (task-agnostic, sequential route): KD, L0, LRF and combinations.

    result = run_compress(CompressConfig(method="kd+l0", target_sparsity=0.5), pretrain.model,
                          train_loader, "runs/my-compression")
    result.encoder                      # the materialised (physically smaller) encoder, eval, CPU
    result.metrics["achieved_sparsity"] # 1 − its real parameter count / the teacher's

Training (``CompressConfig`` explains the methods): the student (``build_student``, from the SSL
encoder), the BEST-RQ head (``SSLObjective``) and, for kd methods, the KD projections
(``LayerDistillation``, identity-initialised) minimise, on the masked input of each batch,

    loss = ssl_weight · BEST-RQ(student)                                        "loss_ssl"
           + layer_weight · Σ_pairs [L1 + (1 − cos)](P h_student, h_SSL) / #pairs   "loss_distill" (kd methods)
           + λ1 (ŝ − t) + λ2 (ŝ − t)²                                           "loss_penalty" (gated methods)

with ŝ = 1 − E[params] / params₀, params₀ = the SSL encoder's count, t ramping from 0
to the target over ``warmup_fraction · steps``; λ ascends (``SparsityController`` in its own
parameter group and in the trainer's ``modules``). The SSL encoder runs in eval mode without gradient.
Then the student is materialised (``materialise``: gates → sliced dense weights; with
``calibrate_budget`` its gates are first shifted onto the budget, ``budget_calibration`` in
result.json), optionally trained further for ``final_distill_steps`` (no gates), saved with
``save_compressed``, and measured.

Run folder: ``config.json`` + ``history.json`` + ``checkpoints/last.pt`` (the trainer; an interrupted
run resumes), ``final_distill/`` (the same for the final distillation), ``compressed.pt``
(``load_compressed``) and, written last, ``result.json``: method, target and achieved sparsity
(real materialised count vs the teacher), the last expected sparsity ŝ, the last loss parts
(``final_losses``), ``ssl_encoder_digest`` (the SSL encoder it started from), ``compress_cost``
(steps, frames, CPU / wall seconds: ``training_cost``), parameters, MACs per
second of audio (``expected_macs_per_second``) and their reduction, CPU latency of one
``latency_seconds`` utterance (batch 1, ``measure_latency``) for student and teacher, wall time
(of every process that worked on the run: checkpoints carry the time trained so far).
A folder with ``result.json`` is reused as is (if its config is the requested one).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdlab.compress.budget_calibration import calibrate_if_gated
from kdlab.compress.kd_losses import LayerDistillation, uniform_layer_map
from kdlab.compress.lagrangian import expected_sparsity
from kdlab.compress.materialise import load_compressed, materialise, save_compressed
from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import GateSet
from kdlab.eval.measure import measure_encoder, solo_latency
from kdlab.models.bestrq import BestRQModel
from kdlab.models.conformer import ConformerEncoder
from kdlab.train.history import History
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.compress_history import compression_record
from kdlab.train.recipes.compress_student import build_student
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import (
    claim_run_dir,
    has_checkpoint,
    load_run,
    read_result,
    seconds_before_resume,
    write_result,
)
from kdlab.train.recipes.sparsity_groups import sparsity_param_groups
from kdlab.train.recipes.ssl_objective import SSLObjective
from kdlab.train.recipes.student_start import weights_digest
from kdlab.train.recipes.training_cost import phase_cost
from kdlab.train.trainer import Trainer, TrainerConfig, resolve_device

COMPRESSED = "compressed.pt"
FINAL_DISTILL = "final_distill"


class DistilledStudent(nn.Module):
    """What the trainer optimises: the student encoder, the BEST-RQ head (None when ``ssl_weight``
    is 0) and the KD projections (None without KD)."""

    def __init__(
        self, student: ConformerEncoder, distill: LayerDistillation | None, ssl: SSLObjective | None = None
    ) -> None:
        super().__init__()
        self.student = student
        self.distill = distill
        self.ssl = ssl


@dataclass
class CompressResult:
    """A finished compression run. ``encoder``: the materialised encoder (eval, CPU); ``student``:
    the gated / factorised encoder it came from (eval; None when loaded from disk); ``metrics``:
    ``result.json``."""

    run_dir: Path
    config: CompressConfig
    encoder: ConformerEncoder
    student: ConformerEncoder | None
    history: History
    metrics: dict


def layer_map(config: CompressConfig, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state pairs: every block for KD methods (``distill.layer_map`` or
    uniform), none for the methods without KD (they train on the SSL objective alone)."""
    if not config.uses_kd():
        return []
    return list(config.distill.layer_map) or uniform_layer_map(student_layers, teacher_layers)


def _trainer_config(config: CompressConfig, steps: int, device: str, progress: bool) -> TrainerConfig:
    return TrainerConfig(
        max_steps=steps,
        lr=config.lr,
        weight_decay=0.0,
        warmup_steps=round(config.lr_warmup_fraction * steps),
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip=config.grad_clip,
        log_every=config.log_every(),
        checkpoint_every=get_profile(config.profile).compress_checkpoint_every,
        seed=config.seed,
        device=device,
        progress=progress,
    )


def _train(
    model: DistilledStudent,
    teacher: ConformerEncoder,
    gates: GateSet,
    config: CompressConfig,
    train_loader,
    run_dir: Path,
    steps: int,
    device: str,
    progress: bool,
) -> Trainer:
    """Train ``model`` for ``steps`` (with the Lagrangian when ``gates`` is not empty); returns the trainer."""
    teacher_params = teacher.num_parameters()
    controller, groups = sparsity_param_groups(
        gates, config.target_sparsity, config.warmup_steps, config.gate_lr, config.lagrangian_lr, device
    )
    weight = config.distill.layer_weight
    trainer: Trainer

    def step_fn(m: DistilledStudent, batch) -> tuple[torch.Tensor, dict]:
        features, lengths = batch.features, batch.feature_lengths
        if m.ssl is not None:
            features, labels, frame_mask = m.ssl.mask(features, lengths)
        out, out_lengths, student_hidden = m.student(features, lengths)
        loss, metrics = out.new_zeros(()), {}
        if m.ssl is not None:
            ssl, accuracy = m.ssl.loss(out, out_lengths, labels, frame_mask)
            loss = loss + config.ssl_weight * ssl
            metrics.update(loss_ssl=ssl.detach(), masked_accuracy=accuracy)
        if m.distill is not None:
            with torch.no_grad():
                teacher_hidden = teacher(features, lengths)[2]
            distill, _ = m.distill(student_hidden, teacher_hidden, out_lengths)
            loss, metrics["loss_distill"] = loss + weight * distill, distill.detach()
        if controller is not None:
            s_hat = expected_sparsity(expected_params(m.student), teacher_params)
            penalty = controller.penalty(s_hat, trainer.step).to(loss.dtype)
            loss = loss + penalty
            metrics["loss_penalty"] = penalty.detach()
        return loss, metrics

    def record_fn(m: DistilledStudent) -> dict:
        return compression_record(m.student, gates, teacher_params, controller, trainer.step, config.target_sparsity)

    trainer = Trainer(
        model,
        _trainer_config(config, steps, device, progress),
        step_fn,
        train_loader,
        param_groups=groups,
        modules={"lagrangian": controller} if controller else None,
        record_fn=record_fn,
        run_dir=run_dir,
        configs={"compress": config.to_dict()},
    )
    if has_checkpoint(run_dir):
        trainer.load_checkpoint()
    trainer.fit()
    return trainer


def measured_result(encoder: ConformerEncoder, teacher: ConformerEncoder, seconds: float, seed: int) -> dict:
    """``eval.measure.measure_encoder`` of ``encoder`` vs ``teacher`` (both eval, CPU) with each timed
    alone on a ``seconds`` utterance, its counts under this route's result.json names ``params`` /
    ``teacher_params``."""
    measured = measure_encoder(encoder, teacher, solo_latency(seconds, seed))
    return {
        "params": measured.pop("encoder_params"),
        "teacher_params": measured.pop("teacher_encoder_params"),
        **measured,
    }


def _ssl_parts(
    ssl_model: BestRQModel | ConformerEncoder, config: CompressConfig
) -> tuple[ConformerEncoder, SSLObjective | None]:
    """(the SSL encoder, the BEST-RQ objective or None when ``ssl_weight`` is 0)."""
    if isinstance(ssl_model, BestRQModel):
        return ssl_model.encoder, SSLObjective(ssl_model) if config.ssl_weight > 0 else None
    if config.ssl_weight > 0:
        raise ValueError(
            f"{config.method!r} with ssl_weight {config.ssl_weight} needs the BEST-RQ model (its head "
            "and quantiser), got a bare encoder; pass the pre-training's model (PretrainResult.model), "
            "or ssl_weight=0 for a kd method"
        )
    return ssl_model, None


def run_compress(
    config: CompressConfig,
    ssl_model: BestRQModel | ConformerEncoder,
    train_loader,
    run_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> CompressResult:
    """Compress the SSL encoder (``ssl_model``: the pre-trained BEST-RQ model, not modified; a bare
    encoder will do when ``ssl_weight`` is 0) with ``config.method`` on batches of ``train_loader``
    (``features (B, T, F)``, ``feature_lengths (B,)``); see the module docstring. Reuses a complete
    ``run_dir`` and resumes an interrupted one; one holding other settings is refused (`force`:
    replaced, ``runs.claim_run_dir``)."""
    run_dir = claim_run_dir(run_dir, "compress", config.to_dict(), force)
    if read_result(run_dir) is not None:
        return load_compress(run_dir)
    start = time.perf_counter()
    teacher_encoder, ssl = _ssl_parts(ssl_model, config)
    teacher = copy.deepcopy(teacher_encoder).to(resolve_device(device)).eval().requires_grad_(False)
    built = build_student(config, teacher)
    pairs = layer_map(config, built.encoder.config.num_layers, teacher.config.num_layers)
    distill = LayerDistillation(built.encoder.config.d_model, teacher.config.d_model, pairs) if pairs else None
    model = DistilledStudent(built.encoder, distill, ssl).to(next(teacher.parameters()).device)
    trainer = _train(model, teacher, built.gates, config, train_loader, run_dir, config.steps, device, progress)
    student = model.student.eval()
    calibration = calibrate_if_gated(
        config.calibrate_budget, student, built.gates, config.target_sparsity, teacher.num_parameters()
    )
    encoder = materialise(student)
    final = None
    if config.final_distill_steps:
        final_model = DistilledStudent(encoder, model.distill, model.ssl)
        final = _train(
            final_model,
            teacher,
            GateSet({}, {}),
            config,
            train_loader,
            run_dir / FINAL_DISTILL,
            config.final_distill_steps,
            device,
            progress,
        )
        encoder = final_model.student
    before = seconds_before_resume(trainer, final)["wall"]
    seconds = time.perf_counter() - start + before
    encoder = encoder.cpu().eval()
    save_compressed(encoder, run_dir / COMPRESSED)
    last = trainer.history.last("record") or {}
    last_train = (final or trainer).history.last("train") or {}
    metrics = {
        "method": config.method,
        "target_sparsity": config.target_sparsity,
        "expected_sparsity_end": last.get("expected_sparsity"),
        "steps": trainer.step,
        "final_distill_steps": config.final_distill_steps,
        "wall_seconds": seconds,
        "wall_seconds_before_resume": before,
        "device": str(trainer.device),
        "skipped_steps": trainer.skipped + (final.skipped if final else 0),
        "final_loss_distill": last_train.get("loss_distill"),
        "layer_map": [list(p) for p in pairs],
        "final_losses": {k: v for k, v in last_train.items() if k.startswith("loss")},
        "ssl_encoder_digest": weights_digest(teacher_encoder),
        "compress_cost": _cost(trainer, final, train_loader),
        "budget_calibration": calibration,
        **built.info,
        **measured_result(encoder, teacher.cpu(), config.latency_seconds, config.seed),
    }
    write_result(run_dir, metrics)
    return CompressResult(run_dir, config, encoder, student.cpu(), History.load(run_dir / "history.json"), metrics)


def _cost(trainer: Trainer, final: Trainer | None, train_loader) -> dict:
    """``phase_cost`` of the compression (and final distillation) phases."""
    phases = {"compress": trainer, "final_distill": final}
    cost = {}
    for name, t in phases.items():
        if t is None:
            continue
        seconds = t.elapsed()
        metrics = {"steps": t.step, "cpu_seconds": seconds["cpu"], "wall_seconds": seconds["wall"]}
        cost[name] = phase_cost(metrics, train_loader)
    return cost


def load_compress(run_dir: str | Path) -> CompressResult:
    """A completed compression run, loaded on the CPU (``student`` is None: only the materialised
    encoder is stored)."""
    run_dir, config, metrics = load_run(
        run_dir, "compress", CompressConfig, "`python -m kdlab compress` or run_compress()"
    )
    return CompressResult(
        run_dir, config, load_compressed(run_dir / COMPRESSED), None, History.load(run_dir / "history.json"), metrics
    )
