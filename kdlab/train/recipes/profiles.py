"""Every number that depends on the recipe profile: step budgets, batch sizes, model presets,
learning rates and targets of the teacher recipes, both compression routes, the study grid and the
lessons (``tests/test_profiles_defined_once.py`` checks no other module maps profile names to values).

* ``tiny``: tests and notebook smoke runs; a tiny encoder, a handful of steps, seconds on a CPU.
* ``default``: the real teacher on the default corpus; pre-training + RNN-T fine-tuning fit in
  about 20 minutes on 2 CPU cores (see ``benchmarks/asr_quality.py`` for the measured numbers).
* ``full``: a bigger encoder and longer schedules on the full corpus, for a GPU.

``frames_per_batch`` bounds batch size x longest utterance (10 ms frames) of training batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from kdlab.train.trainer import TrainerConfig


@dataclass(frozen=True)
class RecipeProfile:
    """Everything a profile decides; the recipe configs copy these values (and may override them)."""

    corpus_profile: str
    encoder_size: str
    encoder_overrides: dict = field(default_factory=dict)
    # ``RNNTConfig`` fields of every route's RNN-T: sizes, and ``prune_range`` (S > 0: the pruned
    # transducer loss, docs/teacher_calibration.md "Session 9"; 0: the full lattice)
    rnnt: dict = field(default_factory=dict)
    bestrq: dict = field(default_factory=dict)
    pretrain_steps: int = 100
    pretrain_lr: float = 2e-3
    pretrain_warmup: int = 20
    finetune_steps: int = 200
    finetune_lr: float = 2e-3
    finetune_warmup: int = 20
    ctc_warmup_steps: int = 0
    ctc_warmup_lr: float = 2e-3
    ctc_aux_weight: float = 0.0
    # Where the streaming teacher starts: "ssl" (the BEST-RQ encoder, CTC warm-start first, like the
    # offline teacher) or "offline" (the fine-tuned offline teacher, whole model and CTC head, its
    # ``finetune_steps`` RNN-T steps at peak ``streaming_from_offline_lr``: docs/teacher_calibration.md
    # "Session 13").
    streaming_teacher_init: str = "ssl"
    streaming_from_offline_lr: float = 2e-3
    frames_per_batch: int = 12000
    eval_every: int = 0
    dev_eval_utterances: int = 100
    cmvn_utterances: int = 500
    chunk_size: int = 16
    specaugment: bool = True
    tokenizer: str = "char"  # "char" or "bpe:<vocabulary size>" (sentencepiece, trained on the corpus' train text)
    # The ASR schedule of every student row of the study (both routes, KD baselines, from-scratch
    # reference): CTC warm-start steps, then RNN-T steps (``student_schedule.py``; docs/study_routes.md).
    student_ctc_steps: int = 0
    student_rnnt_steps: int = 200
    # Parameter budget (fraction of the teacher encoder removed) of the study grid and the lessons.
    # The tiny encoder's subsampling front-end holds about half of its parameters, so no method can
    # remove 50 % of it: the tiny profile compares at 25 %.
    target_sparsity: float = 0.5
    # The sequential route's task-agnostic compression (``CompressConfig.for_profile``): steps, λ1, λ2
    # learning rate (ŝ reaches the target within the steps without swinging past it; the runs that
    # chose them: docs/sparsity_rates.md) and steps between periodic checkpoints (every trainer also
    # checkpoints after ``TrainerConfig.checkpoint_seconds`` and at SIGTERM / Ctrl-C).
    compress_steps: int = 400
    compress_lagrangian_lr: float = 0.01
    compress_checkpoint_every: int = 50
    # The joint route (``JointConfig.for_profile``): RNN-T steps (of ``student_rnnt_steps``) that train
    # the materialised model (not tuned at "full"), and the gates' and λ's learning rates (the task
    # loss holds the gates open harder than the compression route's KD loss, so they are faster:
    # docs/sparsity_rates.md).
    joint_recovery_steps: int = 50
    joint_gate_lr: float = 0.1
    joint_lagrangian_lr: float = 0.01
    # The study grid (``StudyConfig``): its methods when none are named (None: all of
    # ``study.config.METHODS``), the runtime of its latency column, and its step budgets where they
    # differ from the recipes' (``StudyConfig`` field name -> value; docs/study_routes.md).
    study_methods: tuple[str, ...] | None = None
    study_latency_runtime: str = "onnxruntime"
    study_budgets: dict = field(default_factory=dict)
    # The compression lessons (notebooks 02-04, ``lessons.compression.lesson_budget``): steps per run,
    # padded frames per batch, seconds of audio of the latency measurement, dev utterances compared.
    lesson_steps: int = 20
    lesson_frames_per_batch: int = 3000
    lesson_latency_seconds: float = 4.0
    lesson_eval_utterances: int = 24
    # The study lessons' smoke budgets (notebooks 05-06, ``lessons.study_grid.grid_config``) when no
    # steps are given: {"steps", "methods", "latency": StudyConfig latency fields}; empty: none.
    lesson_grid_smoke: dict = field(default_factory=dict)

    @property
    def encoder_frame_ms(self) -> int:
        """Milliseconds of audio per encoder frame: 10 ms features times the subsampling factor."""
        return 10 * self.encoder_overrides.get("subsampling_factor", 4)

    def to_dict(self) -> dict:
        return asdict(self)

    def cosine_trainer(self, steps: int, lr: float, warmup: int, seed: int) -> TrainerConfig:
        """A teacher phase's optimisation: `steps` at peak `lr` after `warmup` linear steps, cosine down
        to 5 % of it, dev evaluation and a checkpoint every ``eval_every`` steps."""
        return TrainerConfig(
            max_steps=steps,
            lr=lr,
            warmup_steps=min(warmup, steps),
            schedule="cosine",
            min_lr_ratio=0.05,
            eval_every=self.eval_every,
            checkpoint_every=self.eval_every,
            seed=seed,
        )


PROFILES: dict[str, RecipeProfile] = {
    "tiny": RecipeProfile(
        corpus_profile="tiny",
        encoder_size="tiny",
        rnnt=dict(pred_embed_dim=16, pred_hidden=32, joint_dim=32),
        bestrq=dict(codebook_size=64, codebook_dim=8),
        pretrain_steps=4,
        pretrain_warmup=2,
        finetune_steps=6,
        finetune_warmup=2,
        frames_per_batch=3000,
        dev_eval_utterances=8,
        cmvn_utterances=40,
        chunk_size=8,
        specaugment=False,
        student_ctc_steps=2,
        student_rnnt_steps=6,
        target_sparsity=0.25,
        compress_steps=40,
        compress_checkpoint_every=10,
        joint_recovery_steps=2,
        study_latency_runtime="eager",  # exporting every row would cost more than the smoke grid
        lesson_steps=4,
        lesson_latency_seconds=0.5,
        lesson_eval_utterances=8,
        lesson_grid_smoke={
            "steps": 4,
            "methods": ("kd+l0", "kd+lrf", "kd+lrf+l0"),
            "latency": {"latency_seconds": 1.0, "latency_min_time": 0.02, "latency_min_runs": 1},
        },
    ),
    # ~2.05 M parameters (8 blocks of width 96: the conv2d front-end costs width^2 per frame, so a
    # narrow, deep encoder trains fastest per parameter on a CPU). A CTC warm-start ends the blank
    # plateau RNN-T alone sits on, and CTC beside the transducer (0.3) keeps it off; SpecAugment
    # delayed that exit and dropout slowed both the steps and the exit (docs/teacher_calibration.md).
    "default": RecipeProfile(
        corpus_profile="default",
        encoder_size="small",
        encoder_overrides=dict(
            d_model=96,
            num_layers=8,
            num_heads=4,
            head_dim=24,
            ffn_dim=384,
            conv_channels=96,
            subsampling_channels=32,
            dropout=0.0,
        ),  # a narrow front-end (docs/teacher_calibration.md: "The front-end matters")
        # the pruned transducer loss: the same teacher for less CPU per RNN-T step, part of the saving
        # spent on more RNN-T steps (docs/teacher_calibration.md "Session 10")
        rnnt=dict(pred_embed_dim=64, pred_hidden=192, joint_dim=160, prune_range=4),
        bestrq=dict(codebook_size=1024, codebook_dim=16),
        pretrain_steps=500,
        pretrain_lr=2e-3,
        pretrain_warmup=30,
        ctc_warmup_steps=800,
        ctc_warmup_lr=2e-3,
        ctc_aux_weight=0.3,
        # from the offline teacher the streaming one generalises better than from the SSL encoder, for
        # less CPU (no CTC warm-start): docs/teacher_calibration.md "Session 13"
        streaming_teacher_init="offline",
        streaming_from_offline_lr=4e-3,
        finetune_steps=900,
        finetune_lr=2e-3,
        finetune_warmup=30,
        frames_per_batch=8000,
        eval_every=400,
        dev_eval_utterances=100,
        chunk_size=16,
        specaugment=False,
        # three quarters of the teacher encoder removed, so the methods can separate (at 0.5 a
        # half-size model from scratch matched the teacher); the students' schedule at which every
        # row left the blank plateau at that budget (docs/study_routes.md, "Third measurement")
        target_sparsity=0.75,
        student_ctc_steps=400,
        student_rnnt_steps=1200,
        compress_lagrangian_lr=0.05,
        joint_gate_lr=0.3,
        joint_lagrangian_lr=0.5,
        # the four methods of the paper's claims (kd+lrf+l0 adds two compression runs and four
        # fine-tunes, about a quarter more time); batches of half the teacher's frames (per second
        # of CPU, more updates of half the size leave the CTC plateau as fast:
        # docs/teacher_calibration.md), 100 compression steps, recovery in the last 15 RNN-T steps
        study_methods=("lrf", "l0", "kd+lrf", "kd+l0"),
        study_budgets=dict(frames_per_batch=4000, compress_steps=100, recovery_steps=15),
    ),
    "full": RecipeProfile(
        corpus_profile="full",
        encoder_size="default",
        rnnt=dict(pred_embed_dim=128, pred_hidden=320, joint_dim=320),
        bestrq=dict(codebook_size=4096, codebook_dim=16),
        pretrain_steps=20000,
        pretrain_lr=2e-3,
        pretrain_warmup=2000,
        finetune_steps=20000,
        finetune_lr=1e-3,
        finetune_warmup=1000,
        frames_per_batch=60000,
        eval_every=1000,
        dev_eval_utterances=300,
        chunk_size=16,
        student_ctc_steps=0,
        student_rnnt_steps=20000,
        compress_steps=20000,
        compress_checkpoint_every=500,
        joint_recovery_steps=2000,
        lesson_steps=2000,
        lesson_frames_per_batch=60000,
        lesson_latency_seconds=10.0,
        lesson_eval_utterances=200,
    ),
}


def get_profile(name: str) -> RecipeProfile:
    """The recipe profile called `name`."""
    if name not in PROFILES:
        raise ValueError(f"unknown recipe profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
