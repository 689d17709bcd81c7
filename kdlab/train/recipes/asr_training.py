"""RNN-T training and final evaluation shared by the fine-tuning recipes (dense and compressed)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from kdlab.data.specaugment import SpecAugment, SpecAugmentConfig
from kdlab.models.rnnt import RNNTModel
from kdlab.train import distributed
from kdlab.train.recipes.ctc_warmup import RNNTWithCTC
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.evaluate import transcribe, transcribe_splits, write_transcripts
from kdlab.train.recipes.runs import has_checkpoint, load_average
from kdlab.train.trainer import Trainer, TrainerConfig


def rnnt_step(model: RNNTModel, batch) -> tuple[torch.Tensor, dict]:
    """Trainer step: the mean RNN-T loss of `batch` (``transducer_loss``) and its parts when it has some."""
    enc, enc_lengths = model.transcribe(batch.features, batch.feature_lengths)
    return model.transducer_loss(enc, enc_lengths, batch.tokens, batch.token_lengths)


def rnnt_ctc_step(model: RNNTWithCTC, batch) -> tuple[torch.Tensor, dict]:
    """Trainer step: RNN-T + weight · CTC, with both losses as metrics."""
    return model(batch)


def train_rnnt(
    model: RNNTModel,
    data: SpeechData,
    trainer_config: TrainerConfig,
    *,
    frames_per_batch: int,
    seed: int,
    specaugment: SpecAugmentConfig | None,
    dev_eval_utterances: int | None,
    run_dir: Path,
    configs: dict,
    device: str = "auto",
    progress: bool = True,
    ctc_head: torch.nn.Linear | None = None,
    ctc_weight: float = 0.0,
) -> tuple[Trainer, dict]:
    """Train `model` on the RNN-T loss in `run_dir` (resuming its checkpoint when there is one).

    With ``ctc_weight`` > 0 the loss is RNN-T + ctc_weight · CTC through `ctc_head` (``RNNTWithCTC``;
    the trainer's model is then that wrapper, and `model` is trained in place all the same).
    The dev WER/CER of the first `dev_eval_utterances` dev utterances is logged every
    `trainer_config.eval_every` steps. Returns the trainer and the run's bookkeeping metrics
    (steps, resume step, wall and CPU seconds, load average before/after, threads, device, skips).
    """
    augment = None if specaugment is None else SpecAugment(specaugment)
    dev = data.eval_loader("dev", limit=dev_eval_utterances)

    def dev_scores(m: RNNTModel | RNNTWithCTC) -> dict:
        scores = transcribe(m.rnnt if isinstance(m, RNNTWithCTC) else m, dev, data.tokenizer).scores()
        return {"dev_wer": scores["wer"], "dev_cer": scores["cer"]}

    if ctc_weight > 0:
        if ctc_head is None:
            raise ValueError("ctc_weight > 0 needs a ctc_head (the CTC warm-start's head)")
        model, step_fn = RNNTWithCTC(model, ctc_head, ctc_weight), rnnt_ctc_step
    else:
        step_fn = rnnt_step
    trainer = Trainer(
        model,
        replace(trainer_config, device=device, progress=progress),
        step_fn,
        data.train_loader(frames_per_batch, seed, augment),
        eval_fn=dev_scores,
        run_dir=run_dir,
        configs=configs,
    )
    resumed_at = 0
    if has_checkpoint(run_dir):
        trainer.load_checkpoint()
        resumed_at = trainer.step
    load_before = load_average()
    trainer.fit()
    seconds = trainer.elapsed()  # every process that trained this run, not only this one
    metrics = {
        "steps": trainer.step,
        "resumed_at_step": resumed_at,
        "wall_seconds": seconds["wall"],
        "cpu_seconds": seconds["cpu"],
        "wall_seconds_before_resume": trainer.resumed_seconds["wall"],
        "load_average_1min": [load_before, load_average()],
        "torch_threads": torch.get_num_threads(),
        "processes": distributed.world_size(),  # data-parallel ranks (--processes / torchrun)
        "device": str(trainer.device),
        "skipped_steps": trainer.skipped,
    }
    return trainer, metrics


def evaluate_rnnt(model: RNNTModel, data: SpeechData, run_dir: Path, beam: int | None = None) -> dict:
    """Score the whole dev, test and held-out test splits (greedy; beam too when `beam` is given).

    Writes `test_transcripts.jsonl` (id, ref, hyp of the greedy test decoding) and the CMVN
    statistics (`cmvn.json`) into `run_dir`; returns `{"dev": scores, "test": scores, ...}`.
    """
    model.eval()
    start = time.perf_counter()
    transcripts = transcribe_splits(model, data)
    metrics: dict = {split: t.scores() for split, t in transcripts.items()}
    if beam is not None:
        for split in ("dev", "test"):
            metrics[f"{split}_beam"] = transcribe(model, data.eval_loader(split), data.tokenizer, "beam", beam).scores()
    metrics["eval_seconds"] = time.perf_counter() - start
    write_transcripts(run_dir / "test_transcripts.jsonl", transcripts["test"])
    data.cmvn.save(run_dir / "cmvn.json")
    return metrics
