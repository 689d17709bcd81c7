"""The joint route: prune / factorise the student WHILE it trains RNN-T, then materialise and recover.

    result = joint_profile(JointConfig.for_profile("default", "kd+l0", 0.5))
    result.metrics["test"]["wer"], result.metrics["encoder_params"], result.metrics["achieved_sparsity"]
    result.model                      # materialised student + predictor + joiner (eval, CPU)

The student starts where every student row of the study starts: the BEST-RQ encoder (compressed
by ``build_student``: gates, factors or a smaller dense copy) with a predictor and joiner fresh
from ``seed``, and gets the student ASR schedule (``student_schedule``). Phases (``joint_model``
has the student and the loss, ``JointConfig`` the methods):

0. CTC warm-start, ``ctc_warmup.steps`` (in ``ctc_warmup/``): the encoder and a CTC head, gates
   held at their initial log α (the Lagrangian starts with the RNN-T phase);
1. joint training, ``steps − recovery_steps``: RNN-T + CTC + KD (kd methods) + Lagrangian (gated
   methods), gates / ranks recorded in ``history.json`` as ``compress_history.compression_record``
   records (the sequential route's format), dev WER of the gated model (eval masks) in "eval" records;
2. with ``calibrate_budget``, the gates shifted onto the parameter budget (``budget_calibration``);
   materialisation (``materialise``: gates → sliced dense weights) and a self-check: the largest
   |difference| between the gated and the materialised encoder outputs on the first dev batch
   (``materialisation_error``, eval mode);
3. recovery, ``recovery_steps``: RNN-T + CTC (+ KD with ``recovery_kd``) on the materialised model,
   in ``recovery/`` (its own ``config.json``, ``history.json``, checkpoints), on the batches that
   follow phase 1's, so the RNN-T steps and frames are those of a sequential fine-tune;
4. greedy dev / test WER and CER of the final model, parameters, MACs per second of audio and
   (``latency``) batch-1 CPU latency vs the SSL encoder (``eval.measure.measure_encoder``).

Run folder: ``config.json`` + ``history.json`` + ``checkpoints/last.pt`` (phase 1), ``ctc_warmup/``,
``recovery/``, ``asr.pt`` (``runs.save_student_asr``: the encoder stored as a ``CompressedEncoderSpec`` +
weights, so it reloads without the original; predictor, joiner, tokenizer), ``cmvn.json``,
``test_transcripts.jsonl`` and, written last, ``result.json``. A complete folder is reused as is;
an interrupted one resumes from its last checkpoints (every ``checkpoint_every`` steps).

result.json: ``method``, ``route`` "joint", ``mode`` "offline" / "streaming", ``seed``,
``kd_source``, target and achieved sparsity (real materialised encoder count vs the dense SSL
encoder), ``encoder_params``, ``teacher_encoder_params``, ``params`` (whole RNN-T model),
``macs_per_second``, ``dev`` / ``test`` ({"wer", "cer", "utterances"}), the start
(``ssl_encoder_digest``, ``fresh_heads_digest``), the cost (``asr_cost``: steps, frames, CPU /
wall seconds of the CTC and RNN-T phases), ``wall_seconds`` / ``cpu_seconds`` (every process that
worked on the run; ``wall_seconds_before_resume``: those before this one) and the details listed
in ``run_joint``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kdlab.compress.budget_calibration import calibrate_if_gated
from kdlab.compress.materialise import materialise
from kdlab.compress.structures import GateSet
from kdlab.data.specaugment import SpecAugment
from kdlab.data.tokenizer import Tokenizer
from kdlab.eval.measure import measure_encoder, solo_latency
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel
from kdlab.train import distributed
from kdlab.train.history import History
from kdlab.train.recipes.compress_history import compression_record
from kdlab.train.recipes.ctc_warmup import ctc_warm_start
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.evaluate import transcribe, transcribe_splits, write_transcripts
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.joint_model import JointLoss, JointStudent, build_joint_student
from kdlab.train.recipes.pretrain import PretrainConfig, PretrainResult, corpus_folder, run_pretrain
from kdlab.train.recipes.runs import (
    claim_run_dir,
    config_digest,
    has_checkpoint,
    load_asr,
    load_average,
    load_run,
    read_result,
    save_student_asr,
    seconds_before_resume,
    write_result,
)
from kdlab.train.recipes.sparsity_groups import sparsity_param_groups
from kdlab.train.recipes.student_start import start_digests
from kdlab.train.recipes.teacher import TeacherBundle, ensure_teacher
from kdlab.train.recipes.training_cost import phase_cost
from kdlab.train.rng import seed_everything
from kdlab.train.trainer import Trainer, TrainerConfig, resolve_device

ROUTE = "joint"
RECOVERY = "recovery"


@dataclass
class JointResult:
    """A finished joint run. ``model``: the final RNN-T model (materialised encoder, after recovery;
    eval, CPU); ``student``: the gated / factorised model at the end of joint training (eval, CPU;
    None when loaded from disk); ``history`` / ``recovery_history`` (None without recovery);
    ``metrics``: ``result.json``."""

    run_dir: Path
    config: JointConfig
    model: RNNTModel
    student: RNNTModel | None
    tokenizer: Tokenizer
    history: History
    recovery_history: History | None
    metrics: dict


def _trainer_config(config: JointConfig, steps: int, lr: float, device: str, progress: bool) -> TrainerConfig:
    return TrainerConfig(
        max_steps=steps,
        lr=lr,
        weight_decay=config.weight_decay,
        warmup_steps=round(config.lr_warmup_fraction * steps),
        schedule="cosine",
        min_lr_ratio=0.05,
        grad_clip=config.grad_clip,
        log_every=config.log_every(steps),
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
        device=device,
        progress=progress,
    )


def _dev_scores(data: SpeechData, limit: int):
    dev = data.eval_loader("dev", limit=limit)

    def scores(model: JointStudent) -> dict:
        result = transcribe(model.asr, dev, data.tokenizer).scores()
        return {"dev_wer": result["wer"], "dev_cer": result["cer"]}

    return scores


def _train(
    model: JointStudent,
    kd_teacher,
    reference_params: int,
    gates: GateSet,
    config: JointConfig,
    data: SpeechData,
    run_dir: Path,
    recovery: bool,
    device: str,
    progress: bool,
    data_position: dict | None = None,
) -> Trainer:
    """Phase 1 (``recovery`` False: Lagrangian when there are gates, history records) or phase 3,
    whose batches start at ``data_position`` (phase 1's end) unless it resumes a checkpoint."""
    steps, lr = (config.recovery_steps, config.recovery_lr) if recovery else (config.pruning_steps, config.lr)
    trainer = None
    controller, groups = sparsity_param_groups(
        gates, config.target_sparsity, config.warmup_steps, config.gate_lr, config.lagrangian_lr, device
    )
    loss_fn = JointLoss(
        config,
        kd_teacher,
        reference_params,
        controller,
        step=lambda: trainer.step,
        kd=config.recovery_kd or not recovery,
    )

    def record_fn(m: JointStudent) -> dict:
        return compression_record(
            m.asr.encoder, gates, reference_params, controller, trainer.step, config.target_sparsity
        )

    specaugment = None if config.specaugment is None else SpecAugment(config.specaugment)
    trainer = Trainer(
        model,
        _trainer_config(config, steps, lr, device, progress),
        loss_fn,
        data.train_loader(config.frames_per_batch, config.seed, specaugment),
        param_groups=groups,
        modules={"lagrangian": controller} if controller else None,
        eval_fn=_dev_scores(data, config.dev_eval_utterances),
        record_fn=None if recovery else record_fn,
        run_dir=run_dir,
        configs={"joint": config.to_dict(), "phase": RECOVERY if recovery else ROUTE},
    )
    if has_checkpoint(run_dir):
        trainer.load_checkpoint()
    elif data_position is not None:
        trainer.batches.load_state_dict(data_position)
    trainer.fit()
    return trainer


def _ctc_warm_start(
    model: JointStudent,
    gates: GateSet,
    config: JointConfig,
    data: SpeechData,
    run_dir: Path,
    device: str,
    progress: bool,
) -> dict:
    """Phase 0: CTC on the student encoder with its gates held (their log α frozen); the head joins ``model``."""
    for parameter in gates.parameters():
        parameter.requires_grad_(False)
    seed_everything(config.seed)
    head, warmup = ctc_warm_start(
        model.asr.encoder,
        data,
        config.ctc_warmup,
        frames_per_batch=config.frames_per_batch,
        seed=config.seed,
        run_dir=run_dir / "ctc_warmup",
        device=device,
        progress=progress,
    )
    for parameter in gates.parameters():
        parameter.requires_grad_(True)
    if head is not None:
        model.ctc_head = head.to(next(model.asr.parameters()).device)
    return warmup


@torch.no_grad()
def materialisation_error(gated: RNNTModel, materialised: RNNTModel, batch) -> float:
    """max |enc_gated − enc_materialised| over the valid frames of ``batch`` (both in eval mode)."""
    device = next(gated.parameters()).device
    features, lengths = batch.features.to(device), batch.feature_lengths.to(device)
    gated_enc, enc_lengths = gated.eval().transcribe(features, lengths)
    plain_enc, _ = materialised.eval().transcribe(features, lengths)
    valid = torch.arange(gated_enc.shape[1], device=device)[None, :] < enc_lengths[:, None]
    return float((gated_enc - plain_enc).abs()[valid].max())


def _rnnt_cost(joint: Trainer, recovery: Trainer | None, loader) -> dict:
    """``phase_cost`` of the RNN-T phase: joint training and recovery, one run of batches."""
    seconds = [t.elapsed() for t in (joint, recovery) if t is not None]
    metrics = {
        "steps": joint.step + (recovery.step if recovery else 0),
        "cpu_seconds": sum(s["cpu"] for s in seconds),
        "wall_seconds": sum(s["wall"] for s in seconds),
    }
    return phase_cost(metrics, loader)


def run_joint(
    config: JointConfig,
    ssl_encoder: ConformerEncoder,
    data: SpeechData,
    run_dir: str | Path,
    kd_teacher: RNNTModel | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> JointResult:
    """Joint compression starting from ``ssl_encoder`` (the BEST-RQ encoder; not modified) on ``data``
    (train batches, dev / test loaders, tokenizer, CMVN), see the module docstring. ``kd_teacher``:
    the fine-tuned teacher of the run's mode, needed (only) by kd methods with ``kd_source`` "finetuned".

    Besides the fields listed there, result.json holds ``expected_sparsity_end`` (ŝ at the last
    record), ``materialisation_error``, ``budget_calibration`` (None, or the shift and the counts
    before / after), ``steps`` / ``recovery_steps`` done, ``skipped_steps``, ``ctc_warmup``, the
    last logged loss parts of each phase, the layer map, the student's build info (dense student
    config or factorisation report), MACs, latency and CPU / load details. A ``run_dir`` holding
    other settings is refused (`force`: replaced, ``runs.claim_run_dir``). Under torchrun every rank
    trains (the trainer keeps them in step) and rank 0 alone evaluates and writes the run's files.
    """
    run_dir = claim_run_dir(run_dir, "joint", config.to_dict(), force)
    if read_result(run_dir) is not None:
        return load_joint(run_dir)
    if config.uses_kd() and config.kd_source == "finetuned" and kd_teacher is None:
        raise ValueError(
            f"{config.method!r} with kd_source 'finetuned' distils the fine-tuned teacher: pass kd_teacher"
        )
    start, cpu_start, load_before = time.perf_counter(), time.process_time(), load_average()
    target_device = resolve_device(device)
    ssl = copy.deepcopy(ssl_encoder).to(target_device).eval().requires_grad_(False)
    teacher = ssl
    if config.uses_kd() and config.kd_source == "finetuned":
        teacher = copy.deepcopy(kd_teacher).to(target_device).eval().requires_grad_(False)
    model, gates, info = build_joint_student(config, ssl, teacher.encoder if teacher is not ssl else None)
    digests = start_digests(ssl_encoder, model.asr)
    reference_params = ssl.num_parameters()
    warmup = _ctc_warm_start(model, gates, config, data, run_dir, device, progress)
    joint = _train(model, teacher, reference_params, gates, config, data, run_dir, False, device, progress)
    gated = model.asr.eval()
    calibration = calibrate_if_gated(
        config.calibrate_budget, gated.encoder, gates, config.target_sparsity, reference_params
    )
    final = copy.deepcopy(gated)
    final.encoder = materialise(gated.encoder)
    dev_batch = next(iter(data.eval_loader("dev", limit=config.dev_eval_utterances)))
    error = materialisation_error(gated, final, dev_batch)
    recovery = None
    if config.recovery_steps:
        distill = model.distill if config.recovery_kd else None
        recovery = _train(
            JointStudent(final, distill, model.ctc_head),
            teacher,
            reference_params,
            GateSet({}, {}),
            config,
            data,
            run_dir / RECOVERY,
            True,
            device,
            progress,
            joint.batches.state_dict(),
        )
    before = seconds_before_resume(joint, recovery)
    train_seconds = time.perf_counter() - start + before["wall"]
    final = final.cpu().eval()
    loader = data.train_loader(config.frames_per_batch, config.seed)
    metrics = {
        "method": config.method,
        "route": ROUTE,
        "mode": config.mode,
        "seed": config.seed,
        "kd_source": config.kd_source if config.uses_kd() else None,
        "target_sparsity": config.target_sparsity,
        **measure_encoder(
            final.encoder, ssl.cpu(), solo_latency(config.latency_seconds, config.seed) if config.latency else None
        ),
        "params": final.num_parameters(),
        **digests,
        "asr_cost": {"ctc": phase_cost(warmup, loader), "rnnt": _rnnt_cost(joint, recovery, loader)},
        "materialisation_error": error,
        "budget_calibration": calibration,
        "steps": joint.step,
        "recovery_steps": recovery.step if recovery else 0,
        "ctc_warmup": warmup,
        "skipped_steps": joint.skipped + (recovery.skipped if recovery else 0),
        "expected_sparsity_end": (joint.history.last("record") or {}).get("expected_sparsity"),
        "train_losses": _losses(joint),
        "recovery_losses": _losses(recovery) if recovery else None,
        "device": str(joint.device),
        "train_seconds": train_seconds,
        **info,
    }
    if distributed.is_main_process():
        evaluated = time.perf_counter()
        transcripts = transcribe_splits(final, data)
        metrics.update({split: t.scores() for split, t in transcripts.items()})
        metrics["eval_seconds"] = time.perf_counter() - evaluated
        write_transcripts(run_dir / "test_transcripts.jsonl", transcripts["test"])
        data.cmvn.save(run_dir / "cmvn.json")
        save_student_asr(final, data.tokenizer, run_dir / "asr.pt")
        metrics.update(
            wall_seconds=time.perf_counter() - start + before["wall"],
            cpu_seconds=time.process_time() - cpu_start + before["cpu"],
            wall_seconds_before_resume=before["wall"],
            load_average_1min=[load_before, load_average()],
            torch_threads=torch.get_num_threads(),
        )
        write_result(run_dir, metrics)
    distributed.barrier()
    result = load_joint(run_dir)
    result.student = gated.cpu()
    return result


def _losses(trainer: Trainer) -> dict:
    """Loss parts of the trainer's last "train" record."""
    last = trainer.history.last("train") or {}
    return {k: v for k, v in last.items() if k.startswith("loss")}


def load_joint(run_dir: str | Path) -> JointResult:
    """A completed joint run, loaded on the CPU (``student`` is None: only the final model is stored)."""
    run_dir, config, metrics = load_run(run_dir, "joint", JointConfig, "`python -m kdlab joint` or run_joint()")
    model, tokenizer = load_asr(run_dir / "asr.pt")
    recovery = run_dir / RECOVERY / "history.json"
    return JointResult(
        run_dir,
        config,
        model,
        None,
        tokenizer,
        History.load(run_dir / "history.json"),
        History.load(recovery) if recovery.is_file() else None,
        metrics,
    )


def joint_teacher(config: JointConfig, device: str = "auto", progress: bool = True) -> TeacherBundle:
    """The profile's fine-tuned teacher of the run's mode (the KD source with ``kd_source``
    "finetuned"): ``ensure_teacher(profile, teacher_seed, streaming, teacher_init)``, trained first
    if missing (a streaming run distils from the streaming teacher; ``teacher_init`` "ssl" means the
    profile's pre-trained teacher, whose streaming one may start from the offline one)."""
    return ensure_teacher(
        config.profile,
        config.teacher_seed,
        streaming=config.streaming,
        init=None if config.teacher_init == "ssl" else config.teacher_init,
        device=device,
        progress=progress,
        corpus_dir=config.teacher_corpus_dir,
        tokenizer=config.tokenizer,
    )


def joint_ssl(config: JointConfig, device: str = "auto", progress: bool = True) -> PretrainResult:
    """The profile's BEST-RQ pre-training with ``teacher_seed`` (trained first if missing): the
    encoder every student starts from, its corpus and CMVN."""
    pretrain = PretrainConfig.for_profile(config.profile, config.teacher_seed, corpus_dir=config.teacher_corpus_dir)
    return run_pretrain(pretrain, device=device, progress=progress)


def default_joint_dir(config: JointConfig, ssl: PretrainResult) -> Path:
    """``<teacher root>/joint-<mode>-<method>-<target>-<hash of the config>`` (beside the pre-training)."""
    name = f"joint-{config.mode}-{config.method}-{config.target_sparsity:g}-{config_digest(config.to_dict())}"
    return ssl.run_dir.parent / name


def joint_profile(
    config: JointConfig,
    run_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    teacher: TeacherBundle | None = None,
    force: bool = False,
) -> JointResult:
    """Joint compression on the profile: its SSL pre-training (``joint_ssl``), that run's corpus and
    CMVN with the run's tokenizer, and (kd methods with ``kd_source`` "finetuned") the fine-tuned
    teacher of the mode (``joint_teacher``, or ``teacher`` when given); default folder
    ``default_joint_dir`` (an explicit one holding other settings is refused before anything
    trains; `force`: replaced)."""
    if run_dir is not None:
        claim_run_dir(run_dir, "joint", config.to_dict(), force)
    ssl = joint_ssl(config, device, progress)
    kd_teacher = None
    if config.uses_kd() and config.kd_source == "finetuned":
        teacher = teacher or joint_teacher(config, device, progress)
        finetune = teacher.finetune.config
        if (finetune.tokenizer, finetune.corpus_digest) != (config.tokenizer, config.teacher_corpus_digest):
            raise ValueError(
                f"the teacher {teacher.finetune.run_dir} uses tokenizer {finetune.tokenizer!r} on corpus "
                f"digest {finetune.corpus_digest}, the joint run asks for {config.tokenizer!r} on "
                f"{config.teacher_corpus_digest}; give the same --corpus and --tokenizer"
            )
        kd_teacher = teacher.model
    pretrain = ssl.config
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        ssl.cmvn,
        config.tokenizer,
    )
    if config.rnnt.vocab_size != data.tokenizer.vocab_size:
        raise ValueError(
            f"rnnt.vocab_size is {config.rnnt.vocab_size}, the tokenizer {config.tokenizer!r} has "
            f"{data.tokenizer.vocab_size}; build the config with JointConfig.for_profile"
        )
    run_dir = Path(run_dir) if run_dir is not None else default_joint_dir(config, ssl)
    return run_joint(config, ssl.encoder, data, run_dir, kd_teacher, device=device, progress=progress, force=force)
