"""Settings of a compression run (``CompressConfig``) and the size of a dense KD student.

Methods (the task-agnostic, sequential route: compress the SSL teacher encoder, no ASR loss):

    method        student                                            loss
    kd            dense smaller conformer (``dense_student_config``) BEST-RQ + layer KD
    l0            SSL encoder copy + hard-concrete gates             BEST-RQ + Lagrangian
    kd+l0         SSL encoder copy + hard-concrete gates             BEST-RQ + layer KD + Lagrangian
    lrf           SSL encoder copy, low-rank factorised to the budget BEST-RQ
    kd+lrf        SSL encoder copy, low-rank factorised to the budget BEST-RQ + layer KD
    kd+lrf+l0     factorised + rank gates + structure gates          BEST-RQ + layer KD + Lagrangian over the total

"BEST-RQ" is the SSL objective itself (``ssl_objective.SSLObjective``: masked prediction of the
pre-training's random-projection codes, cross-entropy per masked frame, weight ``ssl_weight``), so a
method without "kd" has no teacher. "Layer KD" (weight ``distill.layer_weight``) is L1 + (1 − cos)
between every student block output (through an identity-initialised projection) and the SSL
encoder's block it is mapped to (``uniform_layer_map``), on the same masked input. Both parts are
means over frames of order one (docs/study_routes.md), so the weights are 1 by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from kdlab.compress.kd_losses import DistillationConfig
from kdlab.models.conformer import ConformerConfig, ConformerEncoder
from kdlab.train.recipes.corpus_choice import corpus_digest_of
from kdlab.train.recipes.student_spec import STUDENT_SHAPES, StudentSpec, uses_kd

#: Largest |achieved − target| sparsity accepted for a dense KD student.
STUDENT_TOLERANCE = 0.03


@dataclass
class CompressConfig(StudentSpec):
    """One compression run (JSON-serialisable; ``to_dict`` / ``from_dict``): the student
    (``StudentSpec``: method, target sparsity t, seed, ``l0``, ``lrf_*``, ``student_shape``,
    ``student_init``) and how it trains.

    * ``profile`` / ``teacher_seed``: which SSL teacher (``run_pretrain`` of that profile and seed)
      ``compress_profile`` uses; ``seed`` also orders the data.
    * ``steps`` optimizer steps; the target ramps from 0 to t over ``warmup_fraction · steps``.
    * ``lr`` student weights and KD projections (cosine decay after ``lr_warmup_fraction``),
      ``gate_lr`` the gates' log α, ``lagrangian_lr`` λ1, λ2 (both constant, no weight decay).
    * ``ssl_weight``: weight of the BEST-RQ loss (> 0 for the methods without KD; 0 leaves a kd
      method with layer KD alone, as lesson 02 compares KD variants).
    * ``distill``: KD weights and layer map (empty = uniform); output KL is not available in the
      task-agnostic route (no output distribution), so ``distill.output_weight`` must be 0.
    * ``final_distill_steps``: after pruning, materialise and keep distilling (no gates) this long.
    * ``record_every``: steps between history records (None: about 50 records per run).
    * ``calibrate_budget``: before materialising a gated student, shift its gates so the
      materialised count is the budget (``kdlab.compress.budget_calibration``); False leaves the
      count where the Lagrangian brought it (the study and ``kdlab compress`` set True).
    * ``teacher_corpus_dir`` / ``teacher_corpus_digest``: the SSL teacher's corpus, which the
      compression trains on too (``PretrainConfig.corpus_dir``; None: the profile's).
    """

    profile: str = "default"
    teacher_seed: int = 0
    steps: int = 400
    warmup_fraction: float = 0.4
    lr: float = 2e-4
    lr_warmup_fraction: float = 0.05
    gate_lr: float = 0.1
    lagrangian_lr: float = 0.01
    grad_clip: float = 10.0
    ssl_weight: float = 1.0
    distill: DistillationConfig = field(default_factory=DistillationConfig)
    final_distill_steps: int = 0
    record_every: int | None = None
    calibrate_budget: bool = False
    frames_per_batch: int = 12000
    latency_seconds: float = 10.0
    teacher_corpus_dir: str | None = None
    teacher_corpus_digest: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.teacher_corpus_digest = corpus_digest_of(self.teacher_corpus_dir, self.teacher_corpus_digest)
        for name in ("steps", "frames_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.final_distill_steps, int) or self.final_distill_steps < 0:
            raise ValueError(f"final_distill_steps must be an integer >= 0, got {self.final_distill_steps!r}")
        if self.record_every is not None and (not isinstance(self.record_every, int) or self.record_every < 1):
            raise ValueError(f"record_every must be a positive integer or None, got {self.record_every!r}")
        for name in ("warmup_fraction", "lr_warmup_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("lr", "gate_lr", "lagrangian_lr", "latency_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.distill.output_weight > 0:
            raise ValueError(
                "distill.output_weight must be 0 here: the task-agnostic route compresses the SSL "
                "encoder, which has no output distribution; use layer KD (layer_weight)"
            )
        if uses_kd(self.method) and self.distill.layer_weight <= 0:
            raise ValueError(
                f"method {self.method!r} distils, but distill.layer_weight is "
                f"{self.distill.layer_weight}; give it a positive weight or drop 'kd' from the method"
            )
        if self.ssl_weight < 0 or (not uses_kd(self.method) and self.ssl_weight <= 0):
            raise ValueError(
                f"ssl_weight must be >= 0, and > 0 for {self.method!r} (without KD the SSL objective is "
                f"its only loss), got {self.ssl_weight}"
            )

    @classmethod
    def for_profile(
        cls,
        profile: str,
        method: str = "kd+l0",
        target_sparsity: float = 0.5,
        seed: int = 0,
        steps: int | None = None,
        **overrides,
    ) -> CompressConfig:
        """The profile's step budget, batch size and λ learning rate; `overrides` replace any other field."""
        from kdlab.train.recipes.profiles import get_profile

        p = get_profile(profile)
        return cls(
            **{
                "method": method,
                "target_sparsity": target_sparsity,
                "profile": profile,
                "seed": seed,
                "steps": p.compress_steps if steps is None else steps,
                "frames_per_batch": p.frames_per_batch,
                "lagrangian_lr": p.compress_lagrangian_lr,
                **overrides,
            }
        )

    @property
    def warmup_steps(self) -> int:
        """Steps over which the target sparsity ramps from 0 to ``target_sparsity``."""
        return round(self.warmup_fraction * self.steps)

    def log_every(self) -> int:
        return self.record_every or max(1, self.steps // 50)


def config_params(config: ConformerConfig) -> int:
    """``num_parameters()`` of an encoder with this config (built on the meta device: no memory)."""
    with torch.device("meta"):
        return ConformerEncoder(config).num_parameters()


@dataclass(frozen=True)
class DenseStudent:
    """A dense student config, its parameter count and its sparsity 1 − params / teacher params."""

    config: ConformerConfig
    params: int
    sparsity: float


def _solve_ffn(config: ConformerConfig, target_params: float) -> ConformerConfig | None:
    """``config`` with the ``ffn_dim`` (≥ 1) whose count is closest to ``target_params`` (counts are
    affine in ``ffn_dim``); None when even ``ffn_dim`` = 1 is too big."""
    one, two = config_params(replace(config, ffn_dim=1)), config_params(replace(config, ffn_dim=2))
    if one > target_params:
        return None
    return replace(config, ffn_dim=max(1, round(1 + (target_params - one) / (two - one))))


def _scaled(teacher: ConformerConfig, width: float) -> ConformerConfig:
    return replace(
        teacher,
        num_heads=max(1, round(teacher.num_heads * width)),
        ffn_dim=max(1, round(teacher.ffn_dim * width)),
        conv_channels=max(1, round(teacher.conv_channels * width)),
        layer_dims=None,
    )


def dense_student_config(teacher: ConformerConfig, target_sparsity: float, shape: str = "deep") -> DenseStudent:
    """A uniform (no ``layer_dims``) conformer with about (1 − target_sparsity) × the teacher's parameters.

    ``shape="deep"``: same depth and ``d_model``; heads, conv channels and FFN width scaled by one
    factor w (found by bisection on the count), then ``ffn_dim`` solved exactly for the remainder.
    ``shape="shallow"``: same widths, round((1 − t)·L) blocks (at least 1), ``ffn_dim`` solved
    exactly. ``d_model`` is kept in both, so KD projections start as the identity.
    Raises ``ValueError`` when the achieved sparsity is more than ``STUDENT_TOLERANCE`` from the target.
    """
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
    if shape not in STUDENT_SHAPES:
        raise ValueError(f"shape must be one of {STUDENT_SHAPES}, got {shape!r}")
    teacher = replace(teacher, layer_dims=None)
    total = config_params(teacher)
    goal = (1.0 - target_sparsity) * total
    candidate = None
    if shape == "deep":
        low, high = 0.0, 1.0
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if config_params(_scaled(teacher, middle)) < goal else (low, middle)
        candidate = _solve_ffn(_scaled(teacher, high), goal)
    else:
        layers = max(1, round((1.0 - target_sparsity) * teacher.num_layers))
        while candidate is None and layers >= 1:
            candidate = _solve_ffn(replace(teacher, num_layers=layers), goal)
            layers -= 1
    if candidate is None:
        raise ValueError(
            f"no {shape} dense student reaches sparsity {target_sparsity}: the fixed parts alone are "
            "too big; lower the target or try the other shape"
        )
    params = config_params(candidate)
    sparsity = 1.0 - params / total
    if abs(sparsity - target_sparsity) > STUDENT_TOLERANCE:
        raise ValueError(
            f"the closest {shape} dense student has sparsity {sparsity:.3f}, more than "
            f"{STUDENT_TOLERANCE} from the target {target_sparsity}; try the other shape"
        )
    return DenseStudent(candidate, params, sparsity)
