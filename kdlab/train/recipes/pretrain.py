"""BEST-RQ self-supervised pre-training of the conformer encoder.

    result = run_pretrain(PretrainConfig.for_profile("default"))
    result.encoder            # the pre-trained ConformerEncoder (eval mode, CPU)
    result.metrics["dev_masked_accuracy"]

The run folder (default ``runs/teacher-<profile>-<hash>/pretrain``) holds ``config.json``,
``history.json``, ``checkpoints/last.pt``, ``cmvn.json``, ``encoder.pt`` (``encoder_config``,
``encoder`` weights, and the whole BEST-RQ ``model``: quantiser buffers and head) and, last,
``result.json``. A folder with ``result.json`` is reused without training; one with only a
checkpoint is resumed exactly where it stopped.

Metrics: cross-entropy and accuracy of the predicted codes on masked frames of the first
``dev_eval_utterances`` dev utterances (fixed masks), averaged over batches weighted by batch size.
Chance level is about 1 / codebook_size. ``result.json`` also records the training's wall
seconds, CPU seconds (all threads of the process) and the load average before / after: on a
shared machine, CPU seconds / threads estimates the wall time on idle cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from kdlab.config import JsonConfig
from kdlab.data.features import GlobalCMVN
from kdlab.models.bestrq import BestRQConfig, BestRQModel
from kdlab.models.conformer import ConformerConfig, ConformerEncoder, teacher_config
from kdlab.train import distributed
from kdlab.train.history import History
from kdlab.train.recipes.corpus_choice import corpus_digest_of
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import (
    claim_run_dir,
    config_digest,
    has_checkpoint,
    load_average,
    load_run,
    read_result,
    write_result,
)
from kdlab.train.rng import seed_everything
from kdlab.train.trainer import Trainer, TrainerConfig, move_to


@dataclass
class PretrainConfig(JsonConfig):
    """BEST-RQ pre-training run (JSON-serialisable via ``to_dict`` / ``from_dict``).

    ``profile`` names the recipe profile (``profiles.PROFILES``) and, through it, the corpus;
    ``corpus_dir`` overrides the corpus folder (None: the profile's corpus built with
    ``corpus_seed``); ``corpus_digest`` is its content digest (filled in from the folder; it, not
    the path, names the run). ``seed`` drives weights, masks, data order and the quantiser.
    """

    profile: str = "default"
    seed: int = 0
    corpus_seed: int = 0
    corpus_dir: str | None = None
    corpus_digest: str | None = None
    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    bestrq: BestRQConfig = field(default_factory=BestRQConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    frames_per_batch: int = 12000
    cmvn_utterances: int = 500
    dev_eval_utterances: int = 100

    def __post_init__(self) -> None:
        get_profile(self.profile)
        self.corpus_digest = corpus_digest_of(self.corpus_dir, self.corpus_digest)
        for name in ("frames_per_batch", "cmvn_utterances", "dev_eval_utterances"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def for_profile(
        cls,
        profile: str = "default",
        seed: int = 0,
        steps: int | None = None,
        corpus_dir: str | None = None,
        **encoder_overrides,
    ):
        """The profile's settings; `steps` replaces its step budget, `corpus_dir` its corpus (``kdlab data
        --out DIR``), `encoder_overrides` its encoder fields."""
        p = get_profile(profile)
        steps = p.pretrain_steps if steps is None else steps
        return cls(
            profile=profile,
            seed=seed,
            corpus_dir=None if corpus_dir is None else str(corpus_dir),
            encoder=teacher_config(p.encoder_size, **{**p.encoder_overrides, **encoder_overrides}),
            bestrq=BestRQConfig(**{**p.bestrq, "seed": seed}),
            trainer=p.cosine_trainer(steps, p.pretrain_lr, p.pretrain_warmup, seed),
            frames_per_batch=p.frames_per_batch,
            cmvn_utterances=p.cmvn_utterances,
            dev_eval_utterances=p.dev_eval_utterances,
        )

    def digest(self) -> str:
        return config_digest(self.to_dict())


@dataclass
class PretrainResult:
    """A finished pre-training run: the encoder (eval mode, CPU), the BEST-RQ model around it,
    the CMVN it was trained with, its history and ``metrics`` (``result.json``)."""

    run_dir: Path
    config: PretrainConfig
    encoder: ConformerEncoder
    model: BestRQModel
    cmvn: GlobalCMVN
    history: History
    metrics: dict


def corpus_folder(profile: str, corpus_seed: int, corpus_dir: str | None) -> Path:
    """`corpus_dir`, or the recipe profile's corpus (built first if missing)."""
    if corpus_dir is not None:
        return Path(corpus_dir)
    from kdlab.data.corpus import ensure_corpus

    return ensure_corpus(get_profile(profile).corpus_profile, corpus_seed, progress=False)


def default_pretrain_dir(config: PretrainConfig) -> Path:
    """``runs/teacher-<profile>-<config hash>/pretrain``: the teacher family's root holds the pre-training."""
    from kdlab.paths import runs_dir

    return runs_dir() / f"teacher-{config.profile}-{config.digest()}" / "pretrain"


def masked_prediction_metrics(model: BestRQModel, loader, seed: int) -> dict:
    """{"dev_loss", "dev_masked_accuracy"} on `loader` with masks drawn from a generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    total = loss_sum = acc_sum = 0.0
    for batch in loader:
        loss, accuracy = model(move_to(batch, device), generator=generator)
        if torch.isnan(accuracy):
            continue
        loss_sum += float(loss) * len(batch)
        acc_sum += float(accuracy) * len(batch)
        total += len(batch)
    if total == 0:
        raise ValueError("no masked frame in the evaluation data: use longer utterances or a higher mask_prob")
    return {"dev_loss": loss_sum / total, "dev_masked_accuracy": acc_sum / total}


def _step(model: BestRQModel, batch) -> tuple[torch.Tensor, dict]:
    loss, accuracy = model(batch)
    return loss, {"masked_accuracy": accuracy}


def run_pretrain(
    config: PretrainConfig,
    run_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> PretrainResult:
    """Pre-train (or resume, or reuse) the run of `config` in `run_dir` (default `default_pretrain_dir`;
    one holding other settings is refused, or with `force` replaced: ``runs.claim_run_dir``).
    Under torchrun every rank trains and rank 0 alone writes the run's files."""
    run_dir = claim_run_dir(
        run_dir if run_dir is not None else default_pretrain_dir(config), "pretrain", config.to_dict(), force
    )
    if read_result(run_dir) is not None:
        return load_pretrain(run_dir)
    data = SpeechData.from_corpus(
        corpus_folder(config.profile, config.corpus_seed, config.corpus_dir), config.cmvn_utterances
    )
    seed_everything(config.seed)
    model = BestRQModel(ConformerEncoder(config.encoder), config.bestrq)
    dev = data.eval_loader("dev", limit=config.dev_eval_utterances)
    trainer = Trainer(
        model,
        replace(config.trainer, device=device, progress=progress),
        _step,
        data.train_loader(config.frames_per_batch, config.seed),
        eval_fn=lambda m: masked_prediction_metrics(m, dev, config.seed),
        run_dir=run_dir,
        configs={"pretrain": config.to_dict()},
    )
    resumed_at = 0
    if has_checkpoint(run_dir):
        trainer.load_checkpoint()
        resumed_at = trainer.step
    load_before = load_average()
    trainer.fit()
    model = model.cpu().eval()
    if distributed.is_main_process():
        _write_outputs(run_dir, config, model, data, trainer, resumed_at, load_before)
    distributed.barrier()
    return load_pretrain(run_dir)


def _write_outputs(
    run_dir: Path,
    config: PretrainConfig,
    model: BestRQModel,
    data: SpeechData,
    trainer: Trainer,
    resumed_at: int,
    load_before: float | None,
) -> None:
    """The finished run's files: CMVN, ``encoder.pt`` and ``result.json`` (last: the completion marker)."""
    seconds, cpu_seconds = trainer.elapsed()["wall"], trainer.elapsed()["cpu"]  # every process on this run
    data.cmvn.save(run_dir / "cmvn.json")
    torch.save(
        {
            "encoder_config": config.encoder.to_dict(),
            "encoder": model.encoder.state_dict(),
            "model": model.state_dict(),
        },
        run_dir / "encoder.pt",
    )
    final = trainer.history.last("eval") or {}
    write_result(
        run_dir,
        {
            "steps": trainer.step,
            "resumed_at_step": resumed_at,
            "wall_seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "wall_seconds_before_resume": trainer.resumed_seconds["wall"],
            "load_average_1min": [load_before, load_average()],
            "torch_threads": torch.get_num_threads(),
            "processes": distributed.world_size(),  # data-parallel ranks (--processes / torchrun)
            "device": str(trainer.device),
            "encoder_params": model.encoder.num_parameters(),
            "dev_masked_accuracy": final.get("dev_masked_accuracy"),
            "dev_loss": final.get("dev_loss"),
            "chance_accuracy": 1.0 / config.bestrq.codebook_size,
            "skipped_steps": trainer.skipped,
        },
    )


def load_pretrain(run_dir: str | Path) -> PretrainResult:
    """A completed pre-training run, loaded on the CPU."""
    run_dir, config, metrics = load_run(
        run_dir, "pretrain", PretrainConfig, "`python -m kdlab pretrain` or run_pretrain()"
    )
    state = torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True)
    model = BestRQModel(ConformerEncoder(ConformerConfig.from_dict(state["encoder_config"])), config.bestrq)
    model.load_state_dict(state["model"])
    model.eval()
    return PretrainResult(
        run_dir,
        config,
        model.encoder,
        model,
        GlobalCMVN.load(run_dir / "cmvn.json"),
        History.load(run_dir / "history.json"),
        metrics,
    )
