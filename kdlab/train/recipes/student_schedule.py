"""The ASR schedule every student row of the study gets: a CTC warm-start, then RNN-T.

    config = student_finetune_config("default", seed=0, streaming=False)   # a FinetuneConfig
    config.ctc_warmup.steps, config.trainer.max_steps, config.frames_per_batch

Both routes, the KD baselines and the from-scratch reference train their ASR model with this
schedule: the profile's ``student_ctc_steps`` CTC warm-start steps and ``student_rnnt_steps``
RNN-T steps (``profiles.py``, the one place these numbers live), in batches of
``frames_per_batch`` padded frames drawn in the order of the run's seed, with the teacher's
learning rates, CTC weight beside the transducer and SpecAugment setting. The sequential route
runs it on its compressed encoder (``train_asr_schedule``); the joint route runs the same two
phases with its gates, Lagrangian and KD added to the RNN-T phase (``joint.py``).
docs/study_routes.md explains what starts where and what each route is paid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kdlab.data.specaugment import SpecAugmentConfig
from kdlab.models.rnnt import RNNTModel
from kdlab.train.recipes.asr_training import train_rnnt
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig, ctc_warm_start
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.finetune import FinetuneConfig
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.training_cost import phase_cost
from kdlab.train.rng import seed_everything
from kdlab.train.trainer import TrainerConfig


def student_finetune_config(
    profile: str,
    seed: int = 0,
    streaming: bool = False,
    *,
    ctc_steps: int | None = None,
    rnnt_steps: int | None = None,
    corpus_dir: str | None = None,
    tokenizer: str | None = None,
    **overrides,
) -> FinetuneConfig:
    """The profile's fine-tuning settings with the student budget: ``ctc_steps`` / ``rnnt_steps``
    (None: the profile's ``student_ctc_steps`` / ``student_rnnt_steps``); `overrides` replace any
    other ``FinetuneConfig`` field (e.g. ``frames_per_batch``, ``init``, ``encoder``)."""
    p = get_profile(profile)
    rnnt_steps = p.student_rnnt_steps if rnnt_steps is None else rnnt_steps
    ctc_steps = p.student_ctc_steps if ctc_steps is None else ctc_steps
    config = FinetuneConfig.for_profile(
        profile, seed, streaming=streaming, steps=rnnt_steps, corpus_dir=corpus_dir, tokenizer=tokenizer, **overrides
    )
    return replace(config, ctc_warmup=replace(config.ctc_warmup, steps=ctc_steps))


def train_asr_schedule(
    model: RNNTModel,
    data: SpeechData,
    *,
    ctc_warmup: CTCWarmupConfig,
    trainer: TrainerConfig,
    frames_per_batch: int,
    seed: int,
    specaugment: SpecAugmentConfig | None,
    dev_eval_utterances: int,
    run_dir: Path,
    configs: dict,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """CTC warm-start of ``model.encoder`` (in ``run_dir/ctc_warmup``), then RNN-T (+ the CTC
    weight) of the whole ``model`` in ``run_dir``; both resume their checkpoints. Returns
    ``train_rnnt``'s metrics plus ``ctc_warmup`` and ``asr_cost`` ({"ctc", "rnnt"}: ``phase_cost``)."""
    seed_everything(seed)
    head, warmup = ctc_warm_start(
        model.encoder,
        data,
        ctc_warmup,
        frames_per_batch=frames_per_batch,
        seed=seed,
        run_dir=run_dir / "ctc_warmup",
        device=device,
        progress=progress,
    )
    _, metrics = train_rnnt(
        model,
        data,
        trainer,
        frames_per_batch=frames_per_batch,
        seed=seed,
        specaugment=specaugment,
        dev_eval_utterances=dev_eval_utterances,
        run_dir=run_dir,
        configs=configs,
        device=device,
        progress=progress,
        ctc_head=head,
        ctc_weight=ctc_warmup.aux_weight,
    )
    loader = data.train_loader(frames_per_batch, seed)
    return {
        **metrics,
        "ctc_warmup": warmup,
        "asr_cost": {"ctc": phase_cost(warmup, loader), "rnnt": phase_cost(metrics, loader)},
    }
