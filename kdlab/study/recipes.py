"""The recipe run behind each row of the grid, and the measurements the table reports.

``GridRuns(config)`` builds each row's recipe config, knows its run folder and runs it (every
recipe reuses a complete folder and resumes an interrupted one):

    teacher      ensure_teacher(profile, teacher_seed, streaming, finetune_steps=teacher_steps)
    scratch      run_finetune(init="random", encoder=dense_student_config(teacher, t).config) on the
                 student ASR schedule
    sequential   compress_profile(CompressConfig(method, t, seed)) then run_sequential(mode) on the
                 student ASR schedule: the compression run (the SSL encoder, task-agnostic) is shared by
                 both modes
    joint        joint_profile(JointConfig(method, t, seed, mode, latency=False)): the SSL encoder
                 compressed while it trains the student ASR schedule

The student ASR schedule (``student_schedule``: CTC warm-start + RNN-T, the profile's
``student_ctc_steps`` / ``student_rnnt_steps`` or the study's ``ctc_warmup_steps`` /
``finetune_steps``, one batch size) is the same for every student row, and every student starts
from the SSL encoder with fresh predictor / joiner (docs/study_routes.md). Gated students are
calibrated onto the budget before materialisation (``calibrate_budget``), so every method is
compared at the same parameter count however far its Lagrangian got.

Folders: the recipes' defaults under ``runs/teacher-<profile>-<hash>/`` (so the CLI commands and
notebooks reuse them and vice versa), except joint runs distilled from a fine-tuned teacher with
``teacher_steps`` set: ``default_joint_dir`` does not tell teachers of one pre-training apart, so
those get the teacher fine-tune's hash appended.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from kdlab.deploy.encoder_runtime import encoder_call
from kdlab.eval.latency import measure_paired_latency
from kdlab.eval.measure import measure_encoder
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel
from kdlab.study.config import StudyConfig
from kdlab.study.plan import SCRATCH, TEACHER, RowSpec
from kdlab.train.recipes.compress_config import CompressConfig, dense_student_config
from kdlab.train.recipes.compress_teacher import compress_profile, default_compress_dir
from kdlab.train.recipes.finetune import FinetuneConfig, default_finetune_dir, run_finetune
from kdlab.train.recipes.joint import default_joint_dir, joint_profile
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.pretrain import PretrainConfig, PretrainResult, run_pretrain
from kdlab.train.recipes.runs import load_asr
from kdlab.train.recipes.sequential import SequentialConfig, default_sequential_dir, run_sequential
from kdlab.train.recipes.student_schedule import student_finetune_config
from kdlab.train.recipes.teacher import TeacherBundle, ensure_teacher, teacher_finetune_config


class GridRuns:
    """Configs, folders and runs of the rows of one ``StudyConfig`` (teachers loaded once)."""

    def __init__(self, config: StudyConfig, device: str = "auto", progress: bool = False) -> None:
        self.config, self.device, self.progress = config, device, progress
        self._teachers: dict[str, TeacherBundle] = {}
        self._ssl: PretrainResult | None = None

    def teacher(self, mode: str) -> TeacherBundle:
        """The fine-tuned teacher of ``mode`` (trained first if missing)."""
        if mode not in self._teachers:
            c = self.config
            self._teachers[mode] = ensure_teacher(
                c.profile,
                c.teacher_seed,
                streaming=mode == "streaming",
                device=self.device,
                progress=self.progress,
                finetune_steps=c.teacher_steps,
                corpus_dir=c.corpus_dir,
                tokenizer=c.tokenizer,
            )
        return self._teachers[mode]

    def teacher_dir(self, mode: str) -> Path:
        """The run folder ``teacher(mode)`` uses (nothing is trained)."""
        c = self.config
        return default_finetune_dir(
            teacher_finetune_config(
                c.profile,
                c.teacher_seed,
                streaming=mode == "streaming",
                finetune_steps=c.teacher_steps,
                corpus_dir=c.corpus_dir,
                tokenizer=c.tokenizer,
            )
        )

    def ssl_teacher(self) -> PretrainResult:
        """The SSL pre-training every compression starts from (``compress_teacher.ssl_teacher``'s)."""
        if self._ssl is None:
            config = PretrainConfig.for_profile(
                self.config.profile, self.config.teacher_seed, corpus_dir=self.config.corpus_dir
            )
            self._ssl = run_pretrain(config, device=self.device, progress=self.progress)
        return self._ssl

    def compress_config(self, method: str, target: float, seed: int) -> CompressConfig:
        c = self.config
        return CompressConfig.for_profile(
            c.profile,
            method,
            target,
            seed,
            c.compress_steps,
            teacher_seed=c.teacher_seed,
            latency_seconds=c.latency_seconds,
            calibrate_budget=True,
            teacher_corpus_dir=c.corpus_dir,
            **self._batch(),
        )

    def _batch(self) -> dict:
        """The study's batch size override of every run but the teachers' ({} = the recipes')."""
        frames = self.config.frames_per_batch
        return {} if frames is None else {"frames_per_batch": frames}

    def scratch_config(self, spec: RowSpec) -> FinetuneConfig:
        """Random-init training of the dense budget-size encoder (the compress ``kd`` student's shape)
        on the student ASR schedule."""
        c = self.config
        base = student_finetune_config(
            c.profile,
            spec.seed,
            spec.mode == "streaming",
            init="random",
            ctc_steps=c.ctc_warmup_steps,
            rnnt_steps=c.finetune_steps,
            corpus_dir=c.corpus_dir,
            tokenizer=c.tokenizer,
        )
        shape = self.compress_config("kd", spec.target_sparsity, spec.seed).student_shape  # the KD baseline's
        student = dense_student_config(base.encoder, spec.target_sparsity, shape)
        return replace(base, encoder=student.config, **self._batch())

    def sequential_config(self, spec: RowSpec) -> SequentialConfig:
        c = self.config
        compress_dir = default_compress_dir(
            self.compress_config(spec.method, spec.target_sparsity, spec.seed), self.ssl_teacher()
        )
        return SequentialConfig.for_profile(
            c.profile,
            compress_dir,
            spec.seed,
            spec.mode == "streaming",
            c.finetune_steps,
            tokenizer=c.tokenizer,
            corpus_dir=c.corpus_dir,
            ctc_steps=c.ctc_warmup_steps,
            **self._batch(),
        )

    def joint_config(self, spec: RowSpec) -> JointConfig:
        c = self.config
        return JointConfig.for_profile(
            c.profile,
            spec.method,
            spec.target_sparsity,
            spec.seed,
            spec.mode == "streaming",
            c.finetune_steps,
            c.recovery_steps,
            ctc_steps=c.ctc_warmup_steps,
            kd_source=c.joint_kd_source,
            teacher_seed=c.teacher_seed,
            latency=False,
            calibrate_budget=True,
            teacher_corpus_dir=c.corpus_dir,
            tokenizer=c.tokenizer,
            **self._batch(),
        )

    def _joint_teacher(self, spec: RowSpec) -> TeacherBundle | None:
        """The fine-tuned teacher a joint row distils (kd methods with ``joint_kd_source`` "finetuned"), else None."""
        distils = "kd" in spec.method.split("+") and self.config.joint_kd_source == "finetuned"
        return self.teacher(spec.mode) if distils else None

    def run_dir(self, spec: RowSpec) -> Path:
        """Where the row's run lives (the SSL pre-training, and for joint rows distilling the
        fine-tuned teacher that teacher, are trained first if missing)."""
        if spec.method == TEACHER:
            return self.teacher_dir(spec.mode)
        if spec.method == SCRATCH:
            return default_finetune_dir(self.scratch_config(spec))
        if spec.route == "sequential":
            return default_sequential_dir(self.sequential_config(spec))
        folder = default_joint_dir(self.joint_config(spec), self.ssl_teacher())
        if self.config.teacher_steps is None or self._joint_teacher(spec) is None:
            return folder
        return folder.with_name(f"{folder.name}-{self.teacher_dir(spec.mode).name.rsplit('-', 1)[-1]}")

    def run(self, spec: RowSpec) -> tuple[dict, RNNTModel]:
        """Run (or reuse) the row's recipe: (its result.json, the final RNN-T model, eval, CPU)."""
        if spec.method == TEACHER:
            teacher = self.teacher(spec.mode)
            return teacher.metrics, teacher.model
        if spec.method == SCRATCH:
            result = run_finetune(self.scratch_config(spec), device=self.device, progress=self.progress)
        elif spec.route == "sequential":
            compress_profile(
                self.compress_config(spec.method, spec.target_sparsity, spec.seed),
                device=self.device,
                progress=self.progress,
            )
            result = run_sequential(self.sequential_config(spec), device=self.device, progress=self.progress)
        else:
            result = joint_profile(
                self.joint_config(spec),
                self.run_dir(spec),
                device=self.device,
                progress=self.progress,
                teacher=self._joint_teacher(spec),
            )
        return result.metrics, result.model


def load_row_model(row: dict) -> RNNTModel:
    """The final RNN-T model of a results row, reloaded from its run folder (eval, CPU)."""
    return load_asr(Path(row["run_dir"]) / "asr.pt")[0]


def latency_inputs(model: RNNTModel, latency_seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance of ``latency_seconds`` of random 10 ms features (fixed seed): (1, T, F), (1,)."""
    frames = round(100 * latency_seconds) + 3
    features = torch.randn(1, frames, model.encoder.config.input_dim, generator=torch.Generator().manual_seed(0))
    return features, torch.tensor([frames])


def measure_model(
    model: RNNTModel,
    teacher: ConformerEncoder,
    teacher_call: Callable[[], object],
    latency_seconds: float,
    min_time: float,
    min_runs: int,
    runtime: str,
) -> dict:
    """The row's measurements, from ``eval.measure.measure_encoder`` of the model's encoder (eval)
    vs ``teacher`` (the teacher's encoder): ``encoder_params``, ``params`` (whole model),
    ``macs_per_second`` (deterministic count) and the batch-1 CPU latency (no grad) in ``runtime``
    on ``latency_inputs``: ``latency_ms`` and ``latency_teacher_ms`` (``teacher_call``, the
    teacher's encoder on the same input and runtime), timed interleaved in ``min_runs`` rounds of
    about ``min_time`` seconds per model, and ``latency_speedup`` (median over rounds of teacher /
    model)."""

    def paired(encoder: ConformerEncoder, _teacher: ConformerEncoder) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            call = encoder_call(encoder, *latency_inputs(model, latency_seconds), runtime, folder)
            latency = measure_paired_latency(call, teacher_call, rounds=min_runs, min_time_s=min_time)
        return {
            "latency_ms": latency.median_s * 1e3,
            "latency_teacher_ms": latency.reference_median_s * 1e3,
            "latency_speedup": latency.speedup,
            "latency_runtime": runtime,
            "latency_audio_seconds": latency_seconds,
        }

    measured = measure_encoder(model.encoder.eval(), teacher, paired)
    return {
        "encoder_params": measured["encoder_params"],
        "params": model.num_parameters(),
        "macs_per_second": measured["macs_per_second"],
        **{k: v for k, v in measured.items() if k.startswith("latency_")},
    }
