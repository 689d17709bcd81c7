"""Settings of the study grid (``StudyConfig``): which methods, modes, routes, budgets and seeds.

    StudyConfig("default", seeds=3)                 # targets: the profile's (0.5)
    StudyConfig("tiny", compress_steps=2, ...)      # targets: 0.25 (``RecipeProfile.target_sparsity``)

Step budgets left at None are the grid's budget of the profile (``RecipeProfile.study_budgets``), else each
recipe profile's own (``FinetuneConfig``, ``CompressConfig``, ``JointConfig``); a number replaces
that budget for every run of its kind (smoke runs, timing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kdlab.compress.methods import GRID_METHODS as METHODS
from kdlab.train.recipes.corpus_choice import check_corpus_folder, parse_tokenizer_spec
from kdlab.train.recipes.profiles import get_profile

#: The compression methods compared (the KD baseline "kd" always runs: every RWER needs it).
MODES = ("offline", "streaming")
ROUTES = ("sequential", "joint")
BASELINE = "kd"
#: Runtimes of the latency column: eager PyTorch or ONNX Runtime (the faster one the kit ships);
#: each profile's default is ``RecipeProfile.study_latency_runtime``.
LATENCY_RUNTIMES = ("eager", "onnxruntime")
#: Where the joint route's KD terms come from (``JointConfig.kd_source``).
JOINT_KD_SOURCES = ("ssl", "finetuned")
#: A compressed encoder meets its budget t when its achieved sparsity is within t ± this (3 points).
BUDGET_TOLERANCE = 0.03


def uniform_budgets(steps: int) -> dict:
    """The StudyConfig fields of ``kdlab study --steps N``: every recipe trains ``steps`` steps (the
    teacher's RNN-T phase and the students' CTC warm-starts included), of which the joint route's
    recovery takes half."""
    return dict(
        teacher_steps=steps,
        finetune_steps=steps,
        ctc_warmup_steps=steps,
        compress_steps=steps,
        recovery_steps=steps // 2,
    )


def _choices(name: str, values, allowed: tuple[str, ...]) -> list[str]:
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{name} must be a non-empty list drawn from {', '.join(allowed)}; got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {values}")
    return values


@dataclass
class StudyConfig:
    """One study grid (JSON-serialisable; ``to_dict`` / ``from_dict``).

    * ``profile``: recipe profile (teacher, corpus, step budgets); ``seeds``: how many seeds
      (0 … seeds − 1) of every row downstream of the teacher (compression, fine-tuning, joint
      training); the teacher itself is trained once with ``teacher_seed`` and shared.
    * ``target_sparsities``: parameter budgets, fractions of the teacher encoder to remove
      (None: the profile's ``target_sparsity``); ``methods`` (None: the profile's ``study_methods``) /
      ``modes`` / ``routes``: the grid.
    * ``teacher_steps`` (teacher RNN-T fine-tune), ``finetune_steps`` / ``ctc_warmup_steps`` (the
      RNN-T and CTC steps of every student row's ASR schedule: both routes, KD baselines,
      from-scratch reference), ``compress_steps`` (the sequential route's task-agnostic
      compression, before that schedule), ``recovery_steps`` (the joint route's RNN-T steps on
      the materialised model, part of ``finetune_steps``), ``frames_per_batch`` (padded frames per
      training batch of every run but the teachers'): None = the profile's ``study_budgets``, else the
      recipe profile's (``student_ctc_steps`` / ``student_rnnt_steps`` for the schedule).
    * ``joint_kd_source``: the joint route's KD source, "ssl" (the SSL encoder every student starts
      from) or "finetuned" (the fine-tuned teacher of the mode; its rows say so in ``kd_source``).
    * ``latency_seconds``: length of the utterance whose batch-1 CPU encoder latency is measured
      for every row: the median of at least ``latency_min_runs`` timed blocks covering at least
      ``latency_min_time`` seconds, after warm-up, interleaved with the teacher of the row's mode
      (``kdlab.eval.latency.measure_paired_latency``: ``latency_min_runs`` rounds, so a busy moment
      hits both; ``latency_speedup``, the median of the per-round ratios, is what compares a row with
      its teacher, as each row's milliseconds move with the host's speed), in ``latency_runtime``
      ("eager" or "onnxruntime"; None: the profile's ``study_latency_runtime``).
    * ``corpus_dir``: a folder written by ``kdlab data`` (synthesised or imported) every run trains
      on (None: the profile's corpus); ``tokenizer``: "char", "bpe" or "bpe:N" (a sentencepiece
      BPE trained on that corpus's train text). Both reach every run's config and hash.
    """

    profile: str = "default"
    seeds: int = 1
    target_sparsities: list[float] | None = None
    methods: list[str] | None = None
    modes: list[str] = field(default_factory=lambda: list(MODES))
    routes: list[str] = field(default_factory=lambda: list(ROUTES))
    teacher_seed: int = 0
    teacher_steps: int | None = None
    finetune_steps: int | None = None
    ctc_warmup_steps: int | None = None
    compress_steps: int | None = None
    recovery_steps: int | None = None
    frames_per_batch: int | None = None
    latency_seconds: float = 10.0
    latency_min_time: float = 2.0  # 0.3 s in 5 rounds left ±20 % noise (docs/deployment_speed.md)
    latency_min_runs: int = 9
    latency_runtime: str | None = None
    corpus_dir: str | None = None
    tokenizer: str | None = None
    joint_kd_source: str = "ssl"

    def __post_init__(self) -> None:
        profile = get_profile(self.profile)
        if self.tokenizer is None:
            self.tokenizer = profile.tokenizer
        parse_tokenizer_spec(self.tokenizer)
        if self.corpus_dir is not None:
            self.corpus_dir = str(check_corpus_folder(self.corpus_dir))
        for name, steps in profile.study_budgets.items():
            if getattr(self, name) is None:
                setattr(self, name, steps)
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer (how many seeds to run), got {self.seeds!r}")
        if self.target_sparsities is None:
            self.target_sparsities = [profile.target_sparsity]
        self.target_sparsities = [float(t) for t in self.target_sparsities]
        if not self.target_sparsities or len(set(self.target_sparsities)) != len(self.target_sparsities):
            raise ValueError(f"target_sparsities must be distinct values, at least one; got {self.target_sparsities}")
        for t in self.target_sparsities:
            if not 0.0 < t < 1.0:
                raise ValueError(
                    f"target_sparsity must be in (0, 1), got {t} (the fraction of the teacher "
                    "encoder's parameters to remove: 0.5 keeps half)"
                )
        self.methods = _choices(
            "methods", (profile.study_methods or METHODS) if self.methods is None else self.methods, METHODS
        )
        self.modes = _choices("modes", self.modes, MODES)
        self.routes = _choices("routes", self.routes, ROUTES)
        if self.joint_kd_source not in JOINT_KD_SOURCES:
            raise ValueError(f"joint_kd_source must be one of {JOINT_KD_SOURCES}, got {self.joint_kd_source!r}")
        for name in ("teacher_steps", "finetune_steps", "compress_steps", "frames_per_batch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (the profile's), got {value!r}")
        for name in ("recovery_steps", "ctc_warmup_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0 or None (the profile's), got {value!r}")
        if self.latency_runtime is None:
            self.latency_runtime = profile.study_latency_runtime
        if self.latency_runtime not in LATENCY_RUNTIMES:
            raise ValueError(f"latency_runtime must be one of {LATENCY_RUNTIMES}, got {self.latency_runtime!r}")
        if not isinstance(self.latency_min_runs, int) or self.latency_min_runs < 1:
            raise ValueError(f"latency_min_runs must be a positive integer, got {self.latency_min_runs!r}")
        if not self.latency_seconds > 0 or not self.latency_min_time > 0:
            raise ValueError(
                f"latency_seconds and latency_min_time must be > 0, got {self.latency_seconds} "
                f"and {self.latency_min_time}"
            )

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> StudyConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown StudyConfig keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)
