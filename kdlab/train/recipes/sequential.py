"""The sequential route, second half: RNN-T fine-tuning of a materialised compressed encoder.

    compressed = compress_profile(CompressConfig.for_profile("default", "kd+l0", 0.5))
    result = run_sequential(SequentialConfig.for_profile("default", compressed.run_dir, streaming=True))
    result.metrics["test"]["wer"], result.metrics["encoder_params"], result.model

The encoder is the compression run's ``compressed.pt`` (``load_compressed``: possibly low-rank,
possibly pruned, exactly as materialised), put in this run's mode (``encoder_in_mode``), wrapped
in a fresh ``RNNTModel`` (predictor and joiner drawn from ``seed`` alone: ``student_start``) and
trained with the student ASR schedule (``student_schedule``: CTC warm-start, then RNN-T; the
profile's ``student_ctc_steps`` / ``student_rnnt_steps``, the joint route's budget too). Features
are normalised with the SSL teacher's CMVN and read from its corpus (the compression run's
``profile`` / ``teacher_seed``), as the encoder saw them while it was compressed.

Streaming: the compressed encoder comes from the task-agnostic (offline) SSL teacher; in streaming
mode its attention is chunk-masked and its depthwise convolution becomes causal. The weights keep
their shapes, but a kernel trained centred is then applied to the current and previous frames
only (its taps are re-interpreted, shifted by (kernel − 1) / 2 frames): the fine-tune has to
re-learn that, which is part of why sequential streaming students start worse than offline ones.
``result.json`` records it as ``conv_made_causal``.

Run folder (default ``<compression run>/asr-<offline|streaming>-<hash>``, so that every
fine-tune of one compressed encoder sits beside it): ``config.json``, ``history.json``,
``checkpoints/last.pt`` (an interrupted run resumes), ``cmvn.json``, ``asr.pt``
(``runs.save_student_asr`` format: the encoder's ``CompressedEncoderSpec`` + all weights),
``test_transcripts.jsonl`` and, last, ``result.json``: finetune's keys (steps, wall / CPU seconds,
load average, threads, device, ``params`` of the whole RNN-T model, ``encoder_params``, dev / test
WER and CER, ``eval_seconds``) plus ``route`` "sequential", ``method``, ``mode``, ``seed``,
``target_sparsity``, ``achieved_sparsity`` (vs ``teacher_encoder_params``, the dense SSL encoder),
``compress_run_dir``, the start (``ssl_encoder_digest``: the SSL encoder the compression started
from; ``fresh_heads_digest``: the predictor and joiner before training) and the cost
(``asr_cost``: steps, frames, CPU / wall seconds of the CTC and RNN-T phases; ``compress_cost``:
the compression run's). A folder with ``result.json`` is reused as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from kdlab.compress.materialise import build_encoder, encoder_spec
from kdlab.data.features import GlobalCMVN
from kdlab.data.specaugment import SpecAugmentConfig
from kdlab.data.tokenizer import Tokenizer
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.history import History
from kdlab.train.recipes.asr_training import evaluate_rnnt
from kdlab.train.recipes.compress import load_compress
from kdlab.train.recipes.compress_teacher import ssl_teacher
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.finetune import FinetuneConfig
from kdlab.train.recipes.pretrain import corpus_folder
from kdlab.train.recipes.runs import (
    claim_run_dir,
    config_digest,
    load_asr,
    load_run,
    read_result,
    save_student_asr,
    write_result,
)
from kdlab.train.recipes.student_schedule import student_finetune_config, train_asr_schedule
from kdlab.train.recipes.student_start import fresh_rnnt, weights_digest
from kdlab.train.trainer import TrainerConfig

ROUTE = "sequential"


@dataclass
class SequentialConfig:
    """RNN-T fine-tuning of the encoder of a compression run (JSON-serialisable).

    ``compress_run_dir``: a complete ``run_compress`` folder; ``streaming`` / ``chunk_size`` (encoder
    frames) / ``left_chunks`` (-1 = all): the encoder's mode here; ``rnnt``, ``specaugment`` (None:
    off), ``trainer``, ``frames_per_batch`` and ``dev_eval_utterances``: as in ``FinetuneConfig``
    (``for_profile`` copies the profile's fine-tuning settings). Corpus and CMVN are the SSL
    teacher's (see the module docstring), so they are not settings here; ``tokenizer`` ("char",
    "bpe", "bpe:N") is, and ``rnnt.vocab_size`` must match it on that corpus.
    """

    compress_run_dir: str
    profile: str = "default"
    seed: int = 0
    streaming: bool = False
    chunk_size: int = 16
    left_chunks: int = -1
    rnnt: RNNTConfig = field(default_factory=RNNTConfig)
    specaugment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    ctc_warmup: CTCWarmupConfig = field(default_factory=CTCWarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    frames_per_batch: int = 12000
    dev_eval_utterances: int = 100
    tokenizer: str = "char"

    def __post_init__(self) -> None:
        # the fields shared with FinetuneConfig are validated by it (profile, chunk settings, sizes)
        FinetuneConfig(
            profile=self.profile,
            seed=self.seed,
            init="random",
            streaming=self.streaming,
            chunk_size=self.chunk_size,
            left_chunks=self.left_chunks,
            rnnt=self.rnnt,
            specaugment=self.specaugment,
            ctc_warmup=self.ctc_warmup,
            trainer=self.trainer,
            frames_per_batch=self.frames_per_batch,
            dev_eval_utterances=self.dev_eval_utterances,
            tokenizer=self.tokenizer,
        )

    @classmethod
    def for_profile(
        cls,
        profile: str,
        compress_run_dir: str | Path,
        seed: int = 0,
        streaming: bool = False,
        steps: int | None = None,
        tokenizer: str | None = None,
        corpus_dir: str | None = None,
        ctc_steps: int | None = None,
        **overrides,
    ) -> SequentialConfig:
        """The profile's student ASR schedule (``student_schedule.student_finetune_config``); `steps` /
        `ctc_steps` replace its RNN-T / CTC step budgets, `tokenizer` the profile's (None) or another
        (its vocabulary read on `corpus_dir`, the compression teacher's corpus; None: the profile's),
        `overrides` any other field."""
        ft = student_finetune_config(
            profile,
            seed,
            streaming,
            ctc_steps=ctc_steps,
            rnnt_steps=steps,
            corpus_dir=corpus_dir,
            tokenizer=tokenizer,
            init="random",
        )
        base = {f.name: getattr(ft, f.name) for f in fields(cls) if f.name != "compress_run_dir"}
        return cls(**{**base, "compress_run_dir": str(compress_run_dir), **overrides})

    @property
    def mode(self) -> str:
        return "streaming" if self.streaming else "offline"

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            **data,
            "rnnt": self.rnnt.to_dict(),
            "trainer": self.trainer.to_dict(),
            "ctc_warmup": self.ctc_warmup.to_dict(),
            "specaugment": None if self.specaugment is None else self.specaugment.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SequentialConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SequentialConfig keys {sorted(unknown)}; allowed: {sorted(known)}")
        spec = data.get("specaugment")
        return cls(
            **{
                **data,
                "rnnt": RNNTConfig.from_dict(data["rnnt"]),
                "specaugment": None if spec is None else SpecAugmentConfig.from_dict(spec),
                "ctc_warmup": CTCWarmupConfig.from_dict(data["ctc_warmup"]),
                "trainer": TrainerConfig.from_dict(data["trainer"]),
            }
        )

    def digest(self) -> str:
        """Hash of the config; the compression run counts by its folder name, not by where runs/ lives."""
        return config_digest({**self.to_dict(), "compress_run_dir": Path(self.compress_run_dir).name})


@dataclass
class SequentialResult:
    """A finished sequential fine-tune: the RNN-T model (eval, CPU), tokenizer, CMVN, history and
    ``metrics`` (``result.json``)."""

    run_dir: Path
    config: SequentialConfig
    model: RNNTModel
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    history: History
    metrics: dict


def encoder_in_mode(encoder: ConformerEncoder, streaming: bool, chunk_size: int, left_chunks: int) -> ConformerEncoder:
    """A copy of ``encoder`` (dense, pruned or low-rank) with the given streaming mode and the same
    weights, on its device and in its train / eval mode. Only the attention mask and the
    convolution's padding depend on the mode (see the module docstring for the causal conv)."""
    spec = encoder_spec(encoder)
    spec.conformer = {**spec.conformer, "streaming": streaming, "chunk_size": chunk_size, "left_chunks": left_chunks}
    moved = build_encoder(spec)
    reference = next(encoder.parameters())
    moved.to(device=reference.device, dtype=reference.dtype)
    moved.load_state_dict(encoder.state_dict())
    return moved.train(encoder.training)


def default_sequential_dir(config: SequentialConfig) -> Path:
    """``<compression run>/asr-<offline|streaming>-<hash>``."""
    return Path(config.compress_run_dir) / f"asr-{config.mode}-{config.digest()}"


def run_sequential(
    config: SequentialConfig,
    run_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> SequentialResult:
    """Fine-tune (or resume, or reuse) the run of `config` in `run_dir` (default ``default_sequential_dir``;
    one holding other settings is refused, or with `force` replaced: ``runs.claim_run_dir``)."""
    run_dir = claim_run_dir(
        run_dir if run_dir is not None else default_sequential_dir(config), "sequential", config.to_dict(), force
    )
    if read_result(run_dir) is not None:
        return load_sequential(run_dir)
    compressed = load_compress(config.compress_run_dir)
    if compressed.config.profile != config.profile:
        raise ValueError(
            f"the compression run {config.compress_run_dir} is of profile {compressed.config.profile!r}, "
            f"this fine-tune of {config.profile!r}; use SequentialConfig.for_profile with its profile"
        )
    teacher = ssl_teacher(compressed.config, device, progress)
    pretrain = teacher.config
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        teacher.cmvn,
        config.tokenizer,
    )
    if config.rnnt.vocab_size != data.tokenizer.vocab_size:
        raise ValueError(f"rnnt.vocab_size is {config.rnnt.vocab_size}, the tokenizer has {data.tokenizer.vocab_size}")
    source_streaming = compressed.encoder.config.streaming
    encoder = encoder_in_mode(compressed.encoder, config.streaming, config.chunk_size, config.left_chunks).train()
    model = fresh_rnnt(encoder, config.rnnt, config.seed)
    start = {
        "ssl_encoder_digest": compressed.metrics["ssl_encoder_digest"],  # what the compression started from
        "fresh_heads_digest": weights_digest(model.predictor, model.joiner),
    }
    run_metrics = train_asr_schedule(
        model,
        data,
        ctc_warmup=config.ctc_warmup,
        trainer=config.trainer,
        frames_per_batch=config.frames_per_batch,
        seed=config.seed,
        specaugment=config.specaugment,
        dev_eval_utterances=config.dev_eval_utterances,
        run_dir=run_dir,
        configs={"sequential": config.to_dict()},
        device=device,
        progress=progress,
    )
    model = model.eval()
    encoder_params = model.encoder.num_parameters()
    teacher_params = compressed.metrics["teacher_params"]
    metrics = {
        "route": ROUTE,
        "method": compressed.config.method,
        "mode": config.mode,
        "seed": config.seed,
        "target_sparsity": compressed.config.target_sparsity,
        "achieved_sparsity": 1.0 - encoder_params / teacher_params,
        "encoder_params": encoder_params,
        "teacher_encoder_params": teacher_params,
        "params": model.num_parameters(),
        "compress_run_dir": str(config.compress_run_dir),
        **start,
        "compress_cost": compressed.metrics["compress_cost"],
        "conv_made_causal": config.streaming and not source_streaming,
        **run_metrics,
    }
    metrics.update(evaluate_rnnt(model, data, run_dir))
    save_student_asr(model.cpu(), data.tokenizer, run_dir / "asr.pt")
    write_result(run_dir, metrics)
    return load_sequential(run_dir)


def load_sequential(run_dir: str | Path) -> SequentialResult:
    """A completed sequential fine-tune, loaded on the CPU."""
    run_dir, config, metrics = load_run(
        run_dir, "sequential", SequentialConfig, "run_sequential() (or `python -m kdlab study`)"
    )
    model, tokenizer = load_asr(run_dir / "asr.pt")
    return SequentialResult(
        run_dir,
        config,
        model,
        tokenizer,
        GlobalCMVN.load(run_dir / "cmvn.json"),
        History.load(run_dir / "history.json"),
        metrics,
    )
