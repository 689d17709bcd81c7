"""Settings of a joint run (``JointConfig``): prune / factorise the ASR student while it trains RNN-T.

Methods (the same names as the sequential route, ``compress_config.METHODS``):

    method        student (built from the fine-tuned teacher encoder)    loss
    kd            dense smaller conformer, teacher-initialised           RNN-T + KD
    l0            teacher copy + hard-concrete gates                     RNN-T + Lagrangian
    kd+l0         teacher copy + hard-concrete gates                     RNN-T + KD + Lagrangian
    lrf           teacher copy, low-rank factorised to the budget        RNN-T
    kd+lrf        teacher copy, low-rank factorised to the budget        RNN-T + KD
    kd+lrf+l0     factorised + rank gates + structure gates              RNN-T + KD + Lagrangian

"KD" = ``distill.layer_weight`` · layer KD (L1 + (1 − cos) through identity-initialised
projections, every student block to its uniformly mapped teacher block) + ``distill.output_weight``
· ``output_kl`` between the teacher's and the student's joiner outputs (B, T', U+1, V) at
``distill.temperature``. Without "kd" in the name the student trains with the RNN-T loss alone
(``distill`` is then ignored). The student's predictor and joiner start as copies of the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kdlab.config import JsonConfig
from kdlab.compress.kd_losses import DistillationConfig
from kdlab.compress.structures import L0Config
from kdlab.data.specaugment import SpecAugmentConfig
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.corpus_choice import corpus_digest_of, parse_tokenizer_spec

#: Joint training steps and recovery fine-tuning steps of each recipe profile (not tuned at "full").
PROFILE_STEPS = {"tiny": 20, "default": 300, "full": 20000}
PROFILE_RECOVERY_STEPS = {"tiny": 4, "default": 50, "full": 2000}
#: (gate_lr, lagrangian_lr) per profile. The task loss holds the gates open harder than the
#: compression route's KD loss: at "default" (kd+l0 at 0.5, 200 steps of 4k frames) λ at 0.2 left
#: ŝ at 0.41 and the calibration onto the budget then cost the model (test WER 92 %); λ at 0.5 and
#: gates at 0.3 reached ŝ 0.498 (WER 48 %). At 60 steps nothing converged (WER 97-99 %).
PROFILE_SPARSITY_RATES = {"tiny": (0.1, 0.01), "default": (0.3, 0.5), "full": (0.1, 0.01)}
TEACHER_INITS = ("ssl", "random")


@dataclass
class JointConfig(JsonConfig):
    """One joint run (JSON-serialisable; ``to_dict`` / ``from_dict``).

    * ``profile`` / ``teacher_seed`` / ``teacher_init``: which fine-tuned teacher ``joint_profile``
      uses (``ensure_teacher``); ``seed``: gates' noise, student init, data order, recovery.
    * ``target_sparsity`` t: fraction of the dense teacher encoder's parameters to remove, in [0, 1).
    * ``streaming`` / ``chunk_size`` (encoder frames) / ``left_chunks`` (-1 = all): the student's
      encoder mode (chunked attention mask + causal convolution while it trains and after).
    * ``steps`` joint steps (RNN-T + KD + Lagrangian); t ramps from 0 over ``warmup_fraction · steps``.
      ``recovery_steps`` RNN-T fine-tuning of the materialised student (0: none), with the KD terms
      too when ``recovery_kd`` and the method has "kd".
    * ``lr`` / ``recovery_lr``: student weights (+ KD projections), warm-up ``lr_warmup_fraction``
      then cosine decay to 10 %; ``gate_lr`` log α and ``lagrangian_lr`` λ1, λ2 are constant.
    * ``distill``: KD weights, temperature, layer map (empty: uniform); only used by "kd" methods.
    * ``l0`` (its seed is replaced by ``seed``), ``lrf_*``, ``student_shape``, ``student_init``:
      as in ``CompressConfig`` (the student is built by ``compress_student.build_student``).
    * ``specaugment`` (None: off) on the training batches, which teacher and student both see.
    * ``eval_every`` / ``checkpoint_every`` (0: at the end only), ``dev_eval_utterances`` for the
      dev WER logged while training, ``record_every`` (None: about 50 history records per phase);
      ``calibrate_budget``: as in ``CompressConfig`` (gates shifted onto the budget before materialising);
      ``latency``: measure batch-1 CPU latency of one ``latency_seconds`` utterance (student and
      teacher, about a second each); False leaves it out of result.json.
    * ``teacher_corpus_dir`` / ``teacher_corpus_digest`` / ``tokenizer``: the teacher's corpus
      (``FinetuneConfig.corpus_dir``; None: the profile's) and tokenizer, which the student keeps.
    """

    method: str = "kd+l0"
    target_sparsity: float = 0.5
    profile: str = "default"
    seed: int = 0
    teacher_seed: int = 0
    teacher_init: str = "ssl"
    streaming: bool = False
    chunk_size: int = 16
    left_chunks: int = -1
    steps: int = 300
    recovery_steps: int = 50
    warmup_fraction: float = 0.4
    lr: float = 1e-3
    recovery_lr: float = 5e-4
    lr_warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    gate_lr: float = 0.1
    lagrangian_lr: float = 0.01
    grad_clip: float = 5.0
    distill: DistillationConfig = field(default_factory=lambda: DistillationConfig(layer_weight=1.0, output_weight=1.0))
    recovery_kd: bool = True
    calibrate_budget: bool = False
    l0: L0Config = field(default_factory=L0Config)
    lrf_method: str = "budget"
    lrf_energy: float = 0.9
    lrf_sparsity: float | None = None
    student_shape: str = "deep"
    student_init: str = "teacher"
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
        self.l0 = replace(self.l0, seed=self.seed)
        parse_tokenizer_spec(self.tokenizer)
        self.teacher_corpus_digest = corpus_digest_of(self.teacher_corpus_dir, self.teacher_corpus_digest)
        self.compress_config()  # validates the fields shared with the sequential route (method, sparsity, student)
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
            raise ValueError(f"method {self.method!r} distils, but distill.layer_weight and output_weight are both 0; "
                             "give one a positive weight or drop 'kd' from the method")

    @classmethod
    def for_profile(cls, profile: str, method: str = "kd+l0", target_sparsity: float = 0.5, seed: int = 0,
                    streaming: bool = False, steps: int | None = None, recovery_steps: int | None = None,
                    tokenizer: str | None = None, **overrides) -> JointConfig:
        """The profile's step budgets, batch size, chunk size, learning rates (half and a quarter of
        its fine-tuning lr; gates' and λ's: ``PROFILE_SPARSITY_RATES``), dev subset, eval / checkpoint
        period, SpecAugment and tokenizer (`tokenizer` None: the profile's); ``overrides``
        replace any other field."""
        from kdlab.train.recipes.profiles import get_profile

        p, rates = get_profile(profile), PROFILE_SPARSITY_RATES[profile]
        base = dict(tokenizer=p.tokenizer if tokenizer is None else tokenizer, method=method, target_sparsity=target_sparsity, profile=profile, seed=seed, streaming=streaming,
                    chunk_size=p.chunk_size, steps=PROFILE_STEPS[profile] if steps is None else steps,
                    recovery_steps=PROFILE_RECOVERY_STEPS[profile] if recovery_steps is None else recovery_steps,
                    lr=p.finetune_lr / 2, recovery_lr=p.finetune_lr / 4, gate_lr=rates[0], lagrangian_lr=rates[1],
                    frames_per_batch=p.frames_per_batch,
                    eval_every=p.eval_every, checkpoint_every=p.eval_every, dev_eval_utterances=p.dev_eval_utterances,
                    specaugment=SpecAugmentConfig() if p.specaugment else None)
        return cls(**{**base, **overrides})

    def uses_kd(self) -> bool:
        """True when the method adds the KD terms (its name contains "kd")."""
        return "kd" in self.method.split("+")

    @property
    def mode(self) -> str:
        return "streaming" if self.streaming else "offline"

    @property
    def warmup_steps(self) -> int:
        """Steps over which the target sparsity ramps from 0 to ``target_sparsity``."""
        return round(self.warmup_fraction * self.steps)

    def log_every(self, steps: int) -> int:
        return self.record_every or max(1, steps // 50)

    def compress_config(self) -> CompressConfig:
        """The sequential route's config with this run's student settings (what ``build_student`` reads)."""
        return CompressConfig(method=self.method, target_sparsity=self.target_sparsity, profile=self.profile,
                              seed=self.seed, teacher_seed=self.teacher_seed, steps=self.steps, l0=self.l0,
                              lrf_method=self.lrf_method, lrf_energy=self.lrf_energy, lrf_sparsity=self.lrf_sparsity,
                              student_shape=self.student_shape, student_init=self.student_init)
