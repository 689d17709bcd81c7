"""Step budgets, batch sizes and model presets of the teacher recipes, per profile.

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
    frames_per_batch: int = 12000
    eval_every: int = 0
    dev_eval_utterances: int = 100
    cmvn_utterances: int = 500
    chunk_size: int = 16
    specaugment: bool = True
    tokenizer: str = "char"  # "char" or "bpe:<vocabulary size>" (sentencepiece, trained on the corpus' train text)
    # The ASR schedule of every student row of the study (both routes, KD baselines, from-scratch
    # reference): CTC warm-start steps, then RNN-T steps (``student_schedule.py``; docs/study_routes.md).
    # Provisional values, to be recalibrated with the default profile.
    student_ctc_steps: int = 0
    student_rnnt_steps: int = 200

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
        ),  # a narrow front-end: 1.7x faster on CPU
        rnnt=dict(pred_embed_dim=64, pred_hidden=192, joint_dim=160),
        bestrq=dict(codebook_size=1024, codebook_dim=16),
        pretrain_steps=500,
        pretrain_lr=2e-3,
        pretrain_warmup=30,
        ctc_warmup_steps=800,
        ctc_warmup_lr=2e-3,
        ctc_aux_weight=0.3,
        finetune_steps=750,
        finetune_lr=2e-3,
        finetune_warmup=30,
        frames_per_batch=8000,
        eval_every=400,
        dev_eval_utterances=100,
        chunk_size=16,
        specaugment=False,
        student_ctc_steps=200,
        student_rnnt_steps=200,
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
    ),
}


#: Steps between the periodic checkpoints of compression runs (their config holds no period; every
#: trainer also checkpoints after ``TrainerConfig.checkpoint_seconds`` and at SIGTERM / Ctrl-C).
COMPRESS_CHECKPOINT_EVERY = {"tiny": 10, "default": 50, "full": 500}


def get_profile(name: str) -> RecipeProfile:
    """The recipe profile called `name`."""
    if name not in PROFILES:
        raise ValueError(f"unknown recipe profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
