"""RNN-T fine-tuning of a (pre-trained or random) conformer encoder, offline or streaming.

    result = run_finetune(FinetuneConfig.for_profile("default", streaming=True))
    result.metrics["test"]["wer"], result.model, result.tokenizer, result.cmvn

Streaming runs train and evaluate the encoder with its chunked attention mask and causal
convolution (``chunk_size`` encoder frames, ``left_chunks`` chunks of left context, -1 =
all): the masked full-sequence forward equals chunk-by-chunk inference, so its WER is the
streaming WER. ``init="ssl"`` starts from a BEST-RQ run (``ssl_run_dir``, default the
profile's pre-training, run first if missing) and its CMVN; ``init="random"`` from fresh weights
with the same architecture and budget; ``init="offline"`` (streaming only) from the fine-tuned
offline teacher (``offline_run_dir``, default the same profile's, trained first if missing): its
encoder, predictor, joiner, CTC head and CMVN, so the run needs no CTC warm-start.
``ctc_warmup.steps`` > 0 first trains the encoder alone with CTC (``ctc_warmup.py``: it ends the
blank plateau that RNN-T alone sits on), in the run folder's ``ctc_warmup/``.

The run folder (default: beside the pre-training, ``runs/teacher-<profile>-<hash>/
finetune-<offline|streaming>-<init>-<hash>``) holds ``config.json``, ``history.json``
(train loss, dev WER / CER on the first ``dev_eval_utterances`` dev utterances every
``eval_every`` steps), ``checkpoints/last.pt``, ``cmvn.json``, ``asr.pt`` (``encoder_config``,
``rnnt_config``, ``tokenizer``, ``model`` weights: encoder + predictor + joiner),
``test_transcripts.jsonl`` and, last, ``result.json`` (full dev and test WER / CER, greedy,
plus beam search when ``decode_method="beam"``; wall / CPU seconds and load average as in
``pretrain``; ``asr_cost``: steps, frames and CPU seconds of the CTC and RNN-T phases; an
``init="offline"`` run adds ``offline_run_dir`` and ``start_digest``, the hash of the weights it
started from: ``student_start.weights_digest`` of the RNN-T model and, when used, the CTC head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from kdlab.config import JsonConfig
from kdlab.data.features import GlobalCMVN
from kdlab.data.specaugment import SpecAugmentConfig
from kdlab.data.tokenizer import CharTokenizer, Tokenizer
from kdlab.models.conformer import ConformerConfig, ConformerEncoder, teacher_config
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train import distributed
from kdlab.train.checkpoint import load_checkpoint
from kdlab.train.history import History
from kdlab.train.recipes.asr_training import evaluate_rnnt, train_rnnt
from kdlab.train.recipes.corpus_choice import corpus_digest_of, corpus_tokenizer, parse_tokenizer_spec
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig, ctc_warm_start
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.pretrain import (
    PretrainConfig,
    corpus_folder,
    default_pretrain_dir,
    load_pretrain,
    run_pretrain,
)
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import claim_run_dir, config_digest, load_asr, load_run, read_result, write_result
from kdlab.train.recipes.student_start import weights_digest
from kdlab.train.recipes.training_cost import phase_cost
from kdlab.train.rng import seed_everything
from kdlab.train.trainer import TrainerConfig

INITS = ("ssl", "random", "offline")
DECODE_METHODS = ("greedy", "beam")
#: Encoder fields a fine-tuning run may set differently from its SSL checkpoint.
MODE_FIELDS = ("streaming", "chunk_size", "left_chunks", "dropout")


@dataclass
class FinetuneConfig(JsonConfig):
    """RNN-T fine-tuning run (JSON-serialisable). ``encoder`` is the architecture; ``streaming``,
    ``chunk_size`` and ``left_chunks`` here override its mode fields. ``specaugment`` None: off.
    ``corpus_dir`` / ``corpus_digest`` as in ``PretrainConfig``; ``tokenizer`` "char", "bpe" or
    "bpe:N" (``corpus_choice``), whose vocabulary ``rnnt.vocab_size`` must equal."""

    profile: str = "default"
    seed: int = 0
    corpus_seed: int = 0
    corpus_dir: str | None = None
    corpus_digest: str | None = None
    tokenizer: str = "char"
    init: str = "ssl"
    ssl_run_dir: str | None = None
    offline_run_dir: str | None = None
    streaming: bool = False
    chunk_size: int = 16
    left_chunks: int = -1
    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    rnnt: RNNTConfig = field(default_factory=RNNTConfig)
    specaugment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    ctc_warmup: CTCWarmupConfig = field(default_factory=CTCWarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    frames_per_batch: int = 12000
    cmvn_utterances: int = 500
    dev_eval_utterances: int = 100
    decode_method: str = "greedy"
    beam: int = 4

    def __post_init__(self) -> None:
        get_profile(self.profile)
        parse_tokenizer_spec(self.tokenizer)
        self.corpus_digest = corpus_digest_of(self.corpus_dir, self.corpus_digest)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init == "offline" and not self.streaming:
            raise ValueError("init='offline' starts a streaming run from the offline teacher; set streaming=True")
        if self.init == "offline" and self.ctc_warmup.steps > 0:
            raise ValueError("init='offline' starts after the offline teacher's CTC warm-start; set ctc_warmup.steps=0")
        if self.decode_method not in DECODE_METHODS:
            raise ValueError(f"decode_method must be one of {DECODE_METHODS}, got {self.decode_method!r}")
        for name in ("frames_per_batch", "cmvn_utterances", "dev_eval_utterances", "beam", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.encoder_config()  # validates chunk_size / left_chunks

    @classmethod
    def for_profile(
        cls,
        profile: str = "default",
        seed: int = 0,
        streaming: bool = False,
        init: str = "ssl",
        steps: int | None = None,
        corpus_dir: str | None = None,
        tokenizer: str | None = None,
        **overrides,
    ) -> FinetuneConfig:
        """The profile's settings; `steps` replaces its step budget, `corpus_dir` its corpus,
        `tokenizer` its tokenizer (None: the profile's; a BPE model is trained on the corpus here,
        once), `overrides` any other field. ``init="offline"`` trains at the profile's
        ``streaming_from_offline_lr`` without a CTC warm-start (the offline teacher had one)."""
        p = get_profile(profile)
        tokenizer = p.tokenizer if tokenizer is None else tokenizer
        steps = p.finetune_steps if steps is None else steps
        corpus_dir = None if corpus_dir is None else str(corpus_dir)
        vocab_size = tokenizer_vocab_size(profile, overrides.get("corpus_seed", 0), corpus_dir, tokenizer)
        base = dict(
            profile=profile,
            seed=seed,
            init=init,
            streaming=streaming,
            chunk_size=p.chunk_size,
            corpus_dir=corpus_dir,
            tokenizer=tokenizer,
            encoder=teacher_config(p.encoder_size, **p.encoder_overrides),
            rnnt=RNNTConfig(**{"vocab_size": vocab_size, **p.rnnt}),
            specaugment=SpecAugmentConfig() if p.specaugment else None,
            ctc_warmup=CTCWarmupConfig(
                steps=0 if init == "offline" else p.ctc_warmup_steps, lr=p.ctc_warmup_lr, aux_weight=p.ctc_aux_weight
            ),
            trainer=p.cosine_trainer(
                steps, p.streaming_from_offline_lr if init == "offline" else p.finetune_lr, p.finetune_warmup, seed
            ),
            frames_per_batch=p.frames_per_batch,
            cmvn_utterances=p.cmvn_utterances,
            dev_eval_utterances=p.dev_eval_utterances,
        )
        return cls(**{**base, **overrides})

    def encoder_config(self) -> ConformerConfig:
        """The architecture with this run's streaming mode."""
        return replace(self.encoder, streaming=self.streaming, chunk_size=self.chunk_size, left_chunks=self.left_chunks)

    def digest(self) -> str:
        """Hash of the config; the SSL and offline runs count by their folder names, not by where runs/ lives."""
        data = self.to_dict()
        for key in ("ssl_run_dir", "offline_run_dir"):
            if data[key] is not None:
                path = Path(data[key])
                data[key] = f"{path.parent.name}/{path.name}"
        return config_digest(data)

    def offline_teacher(self) -> FinetuneConfig:
        """The offline teacher an ``init="offline"`` run starts from when ``offline_run_dir`` is None:
        the profile's, with this run's seed, corpus, tokenizer, SSL run and RNN-T steps."""
        return FinetuneConfig.for_profile(
            self.profile,
            self.seed,
            steps=self.trainer.max_steps,
            corpus_dir=self.corpus_dir,
            tokenizer=self.tokenizer,
            corpus_seed=self.corpus_seed,
            ssl_run_dir=self.ssl_run_dir,
        )

    def default_pretrain(self) -> PretrainConfig:
        """The profile's pre-training with this seed and corpus (the SSL init when ``ssl_run_dir`` is None)."""
        return replace(
            PretrainConfig.for_profile(self.profile, self.seed),
            corpus_seed=self.corpus_seed,
            corpus_dir=self.corpus_dir,
            corpus_digest=self.corpus_digest,
        )


@dataclass
class FinetuneResult:
    """A finished fine-tuning run: the RNN-T model (eval mode, CPU), its tokenizer and CMVN, the
    history and ``metrics`` (``result.json``: dev / test WER and CER, params, wall time)."""

    run_dir: Path
    config: FinetuneConfig
    model: RNNTModel
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    history: History
    metrics: dict

    def test_transcripts(self) -> list[dict]:
        """[{"id", "ref", "hyp"}] of the test split (greedy)."""
        lines = (self.run_dir / "test_transcripts.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def tokenizer_vocab_size(profile: str, corpus_seed: int, corpus_dir: str | None, tokenizer: str) -> int:
    """Ids (blank included) of `tokenizer` on the run's corpus (for BPE the corpus is read, built first if needed)."""
    if parse_tokenizer_spec(tokenizer)[0] == "char":
        return CharTokenizer().vocab_size
    return corpus_tokenizer(corpus_folder(profile, corpus_seed, corpus_dir), tokenizer).vocab_size


def default_finetune_dir(config: FinetuneConfig) -> Path:
    """``<teacher root>/finetune-<offline|streaming>-<init>-<hash>`` (root = the SSL run's parent)."""
    ssl_dir = Path(config.ssl_run_dir) if config.ssl_run_dir else default_pretrain_dir(config.default_pretrain())
    mode = "streaming" if config.streaming else "offline"
    return ssl_dir.parent / f"finetune-{mode}-{config.init}-{config.digest()}"


def _ssl_encoder(config: FinetuneConfig, device: str, progress: bool):
    """(encoder with the SSL weights and this run's mode, the SSL run's CMVN)."""
    if config.ssl_run_dir is not None:
        pretrain = load_pretrain(config.ssl_run_dir)
    else:
        pretrain = run_pretrain(config.default_pretrain(), device=device, progress=progress)
    ssl_arch = {k: v for k, v in pretrain.config.encoder.to_dict().items() if k not in MODE_FIELDS}
    arch = {k: v for k, v in config.encoder.to_dict().items() if k not in MODE_FIELDS}
    if ssl_arch != arch:
        diff = sorted(k for k in arch if arch[k] != ssl_arch.get(k))
        raise ValueError(
            f"the SSL encoder in {pretrain.run_dir} differs from FinetuneConfig.encoder in {diff}; "
            "fine-tune with the same architecture (or init='random')"
        )
    encoder = ConformerEncoder(config.encoder_config())
    encoder.load_state_dict(pretrain.encoder.state_dict())
    return encoder, pretrain.cmvn


def _offline_start(config: FinetuneConfig, device: str, progress: bool) -> tuple[FinetuneResult, nn.Linear | None]:
    """The offline teacher an ``init="offline"`` run starts from (``offline_run_dir``, or the profile's,
    trained first if missing) and its CTC head (from its last checkpoint; None when it had no CTC beside
    the transducer loss)."""
    if config.offline_run_dir is not None:
        offline = load_finetune(config.offline_run_dir)
    else:
        offline = run_finetune(config.offline_teacher(), device=device, progress=progress)
    if offline.config.ctc_warmup.aux_weight == 0:
        return offline, None
    state = load_checkpoint(offline.run_dir / "checkpoints" / "last.pt")["model"]
    head = nn.Linear(offline.model.encoder.config.d_model, offline.tokenizer.vocab_size)
    head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
    return offline, head


def run_finetune(
    config: FinetuneConfig,
    run_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> FinetuneResult:
    """Fine-tune (or resume, or reuse) the run of `config` in `run_dir` (default `default_finetune_dir`;
    one holding other settings is refused, or with `force` replaced: ``runs.claim_run_dir``).
    Under torchrun every rank trains and rank 0 alone writes the run's files."""
    run_dir = claim_run_dir(
        run_dir if run_dir is not None else default_finetune_dir(config), "finetune", config.to_dict(), force
    )
    if read_result(run_dir) is not None:
        return load_finetune(run_dir)
    encoder, cmvn, offline, offline_head = None, None, None, None
    if config.init == "ssl":
        encoder, cmvn = _ssl_encoder(config, device, progress)
    elif config.init == "offline":
        offline, offline_head = _offline_start(config, device, progress)
        encoder, cmvn = ConformerEncoder(config.encoder_config()), offline.cmvn
        encoder.load_state_dict(offline.model.encoder.state_dict())
    folder = corpus_folder(config.profile, config.corpus_seed, config.corpus_dir)
    data = SpeechData.from_corpus(folder, config.cmvn_utterances, cmvn, config.tokenizer)
    seed_everything(config.seed)
    if encoder is None:  # random init, built after seeding
        encoder = ConformerEncoder(config.encoder_config())
    if config.rnnt.vocab_size != data.tokenizer.vocab_size:
        raise ValueError(f"rnnt.vocab_size is {config.rnnt.vocab_size}, the tokenizer has {data.tokenizer.vocab_size}")
    ctc_head, warmup = ctc_warm_start(
        encoder,
        data,
        config.ctc_warmup,
        frames_per_batch=config.frames_per_batch,
        seed=config.seed,
        run_dir=run_dir / "ctc_warmup",
        device=device,
        progress=progress,
    )
    model = RNNTModel(encoder, config.rnnt)
    start = {}
    if offline is not None:
        model.load_state_dict(offline.model.state_dict())
        if ctc_head is not None and offline_head is not None:  # the head it trained beside the transducer
            ctc_head = offline_head
        start = {
            "offline_run_dir": str(offline.run_dir),
            "start_digest": weights_digest(model, *([] if ctc_head is None else [ctc_head])),
        }
    _, metrics = train_rnnt(
        model,
        data,
        config.trainer,
        frames_per_batch=config.frames_per_batch,
        seed=config.seed,
        specaugment=config.specaugment,
        dev_eval_utterances=config.dev_eval_utterances,
        run_dir=run_dir,
        configs={"finetune": config.to_dict()},
        device=device,
        progress=progress,
        ctc_head=ctc_head,
        ctc_weight=config.ctc_warmup.aux_weight,
    )
    loader = data.train_loader(config.frames_per_batch, config.seed)
    metrics.update(
        params=model.num_parameters(),
        encoder_params=encoder.num_parameters(),
        ctc_warmup=warmup,
        asr_cost={"ctc": phase_cost(warmup, loader), "rnnt": phase_cost(metrics, loader)},
        **start,
    )
    if distributed.is_main_process():
        metrics.update(evaluate_rnnt(model, data, run_dir, config.beam if config.decode_method == "beam" else None))
        model = model.cpu()
        torch.save(
            {
                "encoder_config": config.encoder_config().to_dict(),
                "rnnt_config": config.rnnt.to_dict(),
                "tokenizer": data.tokenizer.to_dict(),
                "model": model.state_dict(),
            },
            run_dir / "asr.pt",
        )
        write_result(run_dir, metrics)
    distributed.barrier()
    return load_finetune(run_dir)


def load_finetune(run_dir: str | Path) -> FinetuneResult:
    """A completed fine-tuning run, loaded on the CPU."""
    run_dir, config, metrics = load_run(
        run_dir, "finetune", FinetuneConfig, "`python -m kdlab finetune` or run_finetune()"
    )
    model, tokenizer = load_asr(run_dir / "asr.pt")
    return FinetuneResult(
        run_dir,
        config,
        model,
        tokenizer,
        GlobalCMVN.load(run_dir / "cmvn.json"),
        History.load(run_dir / "history.json"),
        metrics,
    )
