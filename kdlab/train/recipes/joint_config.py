"""Settings of a joint run (``JointConfig``): prune / factorise the ASR student while it trains RNN-T.

Methods (the same names as the sequential route, ``student_spec.METHODS``):

    method        student (built from the SSL encoder)                   loss of the RNN-T phase
    kd            dense smaller conformer, SSL-initialised               RNN-T + KD
    l0            SSL encoder copy + hard-concrete gates                 RNN-T + Lagrangian
    kd+l0         SSL encoder copy + hard-concrete gates                 RNN-T + KD + Lagrangian
    lrf           SSL encoder copy, low-rank factorised to the budget    RNN-T
    kd+lrf        SSL encoder copy, low-rank factorised to the budget    RNN-T + KD
    kd+lrf+l0     factorised + rank gates + structure gates              RNN-T + KD + Lagrangian

Every student starts from the BEST-RQ encoder with a predictor and joiner drawn from ``seed``
(``student_start.fresh_rnnt``) and gets the student ASR schedule (``student_schedule``): the CTC
warm-start (``ctc_warmup``; gates held at their initial log α: a documented warm-up), then
``steps`` RNN-T steps (+ ``ctc_warmup.aux_weight`` CTC), of which the last ``recovery_steps``
train the materialised model: the recovery is inside the budget, not on top of it.

"KD" (``kd_source``): "ssl" (default) = ``distill.layer_weight`` · layer KD (L1 + (1 − cos) through
identity-initialised projections, every student block to its uniformly mapped block of the SSL
encoder); "finetuned" = layer KD from the fine-tuned teacher of the run's mode, plus
``distill.output_weight`` · ``output_kl`` between its and the student's joiner outputs (rows
labelled "kd from the fine-tuned teacher"). RNN-T and CTC are per token and the KD terms means per
frame, so the parts are of comparable size and the KD weights are 1 (docs/study_routes.md).
Without "kd" in the name the student trains on RNN-T (+ CTC) alone (``distill`` is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdlab.compress.kd_losses import DistillationConfig
from kdlab.data.specaugment import SpecAugmentConfig
from kdlab.models.rnnt import RNNTConfig
from kdlab.train.recipes.corpus_choice import corpus_digest_of, parse_tokenizer_spec
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig
from kdlab.train.recipes.student_spec import StudentSpec

TEACHER_INITS = ("ssl", "random")
#: Where the KD terms come from: the SSL encoder every student starts from, or the fine-tuned teacher.
KD_SOURCES = ("ssl", "finetuned")


@dataclass
class JointConfig(StudentSpec):
    """One joint run (JSON-serialisable; ``to_dict`` / ``from_dict``): the student (``StudentSpec``,
    as in ``CompressConfig``: method, target sparsity t of the dense SSL encoder, seed, ``l0``,
    ``lrf_*``, ``student_shape``, ``student_init``; built by ``compress_student.build_student``) and
    how it trains.

    * ``profile`` / ``teacher_seed``: which SSL pre-training the student starts from (and, with
      ``kd_source`` "finetuned", which fine-tuned teacher, of ``teacher_init``, it distils);
      ``seed`` also draws the fresh predictor / joiner and orders the data.
    * ``streaming`` / ``chunk_size`` (encoder frames) / ``left_chunks`` (-1 = all): the student's
      encoder mode (chunked attention mask + causal convolution while it trains and after).
    * ``ctc_warmup``: the CTC warm-start (steps, lr, and the CTC weight kept beside RNN-T after it).
    * ``steps`` RNN-T steps in all: ``steps − recovery_steps`` with gates, Lagrangian and KD
      (t ramps from 0 over ``warmup_fraction`` of them), then ``recovery_steps`` on the
      materialised model (the KD terms too when ``recovery_kd``), continuing the same batches.
    * ``lr`` / ``recovery_lr``: student weights (+ KD projections), warm-up ``lr_warmup_fraction``
      then cosine decay to 5 % (the fine-tuning schedule); ``gate_lr`` log α and ``lagrangian_lr``
      λ1, λ2 are constant.
    * ``rnnt``: predictor / joiner sizes and vocabulary of the fresh heads.
    * ``kd_source`` "ssl" or "finetuned" and ``distill`` (weights, temperature, layer map; empty:
      uniform): see the module docstring; only used by "kd" methods.
    * ``specaugment`` (None: off) on the training batches.
    * ``eval_every`` / ``checkpoint_every`` (0: at the end only), ``dev_eval_utterances`` for the
      dev WER logged while training, ``record_every`` (None: about 50 history records per phase);
      ``calibrate_budget``: as in ``CompressConfig`` (gates shifted onto the budget before materialising);
      ``latency``: measure batch-1 CPU latency of one ``latency_seconds`` utterance (student and
      SSL encoder, about a second each); False leaves it out of result.json.
    * ``teacher_corpus_dir`` / ``teacher_corpus_digest`` / ``tokenizer``: the SSL encoder's corpus
      (``PretrainConfig.corpus_dir``; None: the profile's) and the tokenizer.
    """

    profile: str = "default"
    teacher_seed: int = 0
    teacher_init: str = "ssl"
    streaming: bool = False
    chunk_size: int = 16
    left_chunks: int = -1
    ctc_warmup: CTCWarmupConfig = field(default_factory=CTCWarmupConfig)
    steps: int = 200
    recovery_steps: int = 50
    warmup_fraction: float = 0.4
    lr: float = 1e-3
    recovery_lr: float = 5e-4
    lr_warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    gate_lr: float = 0.1
    lagrangian_lr: float = 0.01
    grad_clip: float = 5.0
    rnnt: RNNTConfig = field(default_factory=RNNTConfig)
    kd_source: str = "ssl"
    distill: DistillationConfig = field(default_factory=lambda: DistillationConfig(layer_weight=1.0, output_weight=0.0))
    recovery_kd: bool = True
    calibrate_budget: bool = False
    specaugment: SpecAugmentConfig | None = None
    frames_per_batch: int = 12000
    record_every: int | None = None
    eval_every: int = 0
    checkpoint_every: int = 0
    dev_eval_utterances: int = 100
    latency_seconds: float = 10.0
    latency: bool = True
    teacher_corpus_dir: str | None = None
    teacher_corpus_digest: str | None = None
    tokenizer: str = "char"

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_tokenizer_spec(self.tokenizer)
        self.teacher_corpus_digest = corpus_digest_of(self.teacher_corpus_dir, self.teacher_corpus_digest)
        if isinstance(self.steps, int) and isinstance(self.recovery_steps, int) and self.recovery_steps >= self.steps:
            raise ValueError(
                f"recovery_steps ({self.recovery_steps}) must be fewer than steps ({self.steps}): the "
                "recovery is part of the RNN-T budget and the gated model needs at least one step"
            )
        if self.kd_source not in KD_SOURCES:
            raise ValueError(f"kd_source must be one of {KD_SOURCES}, got {self.kd_source!r}")
        if self.kd_source == "ssl" and self.distill.output_weight > 0:
            raise ValueError(
                "distill.output_weight must be 0 with kd_source 'ssl': the SSL encoder has no output "
                "distribution; use kd_source 'finetuned' for output KD"
            )
        if self.teacher_init not in TEACHER_INITS:
            raise ValueError(f"teacher_init must be one of {TEACHER_INITS}, got {self.teacher_init!r}")
        for name in ("steps", "frames_per_batch", "chunk_size", "dev_eval_utterances"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("recovery_steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.left_chunks, int) or self.left_chunks < -1:
            raise ValueError(f"left_chunks must be -1 (unlimited) or a count >= 0, got {self.left_chunks!r}")
        if self.record_every is not None and (not isinstance(self.record_every, int) or self.record_every < 1):
            raise ValueError(f"record_every must be a positive integer or None, got {self.record_every!r}")
        for name in ("warmup_fraction", "lr_warmup_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("lr", "recovery_lr", "gate_lr", "lagrangian_lr", "latency_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay} and {self.grad_clip}")
        if self.uses_kd() and self.distill.layer_weight == 0 and self.distill.output_weight == 0:
            raise ValueError(
                f"method {self.method!r} distils, but distill.layer_weight and output_weight are both 0; "
                "give one a positive weight or drop 'kd' from the method"
            )

    @classmethod
    def for_profile(
        cls,
        profile: str,
        method: str = "kd+l0",
        target_sparsity: float = 0.5,
        seed: int = 0,
        streaming: bool = False,
        steps: int | None = None,
        recovery_steps: int | None = None,
        tokenizer: str | None = None,
        ctc_steps: int | None = None,
        kd_source: str = "ssl",
        **overrides,
    ) -> JointConfig:
        """The student ASR schedule of the profile (``student_finetune_config``: CTC warm-start,
        RNN-T steps, batch size, learning rate and warm-up, SpecAugment, predictor / joiner sizes;
        `steps` / `ctc_steps` replace its budgets), the recovery steps, the gates' and λ's rates
        (``RecipeProfile.joint_gate_lr`` / ``joint_lagrangian_lr``), chunk size, dev subset, eval /
        checkpoint period and tokenizer (`tokenizer` None: the profile's); with `kd_source`
        "finetuned" output KD as well as layer KD; ``overrides`` replace any other field."""
        from kdlab.train.recipes.profiles import get_profile
        from kdlab.train.recipes.student_schedule import student_finetune_config

        p = get_profile(profile)
        asr = student_finetune_config(
            profile,
            seed,
            streaming,
            ctc_steps=ctc_steps,
            rnnt_steps=steps,
            corpus_dir=overrides.get("teacher_corpus_dir"),
            tokenizer=tokenizer,
        )
        steps = asr.trainer.max_steps
        # the profile's recovery fits any budget; an explicit one that does not is refused by __post_init__
        recovery = min(p.joint_recovery_steps, steps - 1) if recovery_steps is None else recovery_steps
        base = dict(
            tokenizer=asr.tokenizer,
            method=method,
            target_sparsity=target_sparsity,
            profile=profile,
            seed=seed,
            streaming=streaming,
            chunk_size=p.chunk_size,
            ctc_warmup=asr.ctc_warmup,
            steps=steps,
            recovery_steps=recovery,
            lr=asr.trainer.lr,
            recovery_lr=asr.trainer.lr / 4,
            lr_warmup_fraction=asr.trainer.warmup_steps / steps,
            gate_lr=p.joint_gate_lr,
            lagrangian_lr=p.joint_lagrangian_lr,
            rnnt=asr.rnnt,
            kd_source=kd_source,
            distill=DistillationConfig(layer_weight=1.0, output_weight=1.0 if kd_source == "finetuned" else 0.0),
            frames_per_batch=asr.frames_per_batch,
            eval_every=p.eval_every,
            checkpoint_every=p.eval_every,
            dev_eval_utterances=p.dev_eval_utterances,
            specaugment=asr.specaugment,
        )
        return cls(**{**base, **overrides})

    @property
    def mode(self) -> str:
        return "streaming" if self.streaming else "offline"

    @property
    def pruning_steps(self) -> int:
        """RNN-T steps with gates, Lagrangian and KD (before materialising and recovering)."""
        return self.steps - self.recovery_steps

    @property
    def warmup_steps(self) -> int:
        """Steps over which the target sparsity ramps from 0 to ``target_sparsity``."""
        return round(self.warmup_fraction * self.pruning_steps)

    def log_every(self, steps: int) -> int:
        return self.record_every or max(1, steps // 50)
