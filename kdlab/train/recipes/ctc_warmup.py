"""CTC warm-start: train the encoder alone with CTC before the RNN-T fine-tuning.

A transducer's predictor learns the transcripts' language model within a few hundred steps; the
loss then falls without the encoder and the model can sit on the blank plateau for thousands of
steps (greedy decoding gives one phrase for every utterance). CTC has no language model to lean
on, so its only way down is through the acoustics; SpecAugment or the transducer loss beside it
delay that exit. After the warm-start, keeping CTC beside the transducer (weight 0.3) helps the
fine-tune. (Measurements: docs/teacher_calibration.md.)

    head, metrics = ctc_warm_start(encoder, data, CTCWarmupConfig(steps=250, lr=2e-3, aux_weight=0.3),
                                   frames_per_batch=8000, seed=0, run_dir=run_dir / "ctc_warmup")
    model = RNNTWithCTC(RNNTModel(encoder, rnnt_config), head, weight=0.3)   # loss = RNN-T + 0.3 CTC

The phase trains encoder + a linear CTC head (blank = id 0, the RNN-T blank), without
SpecAugment, with the shared ``Trainer`` (history, checkpoint and resume in ``run_dir``). The
encoder's mode (offline or streaming mask) is whatever it was built with. With ``aux_weight`` > 0
the head stays beside the transducer while it trains (``RNNTWithCTC``), keeping the encoder's
outputs aligned with the tokens while the predictor and joiner learn; the saved ASR model leaves
the head out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import JsonConfig
from kdlab.data.ctc_alignment import check_ctc_alignable
from kdlab.data.features import FbankConfig
from kdlab.models.subsampling import subsampled_length
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.runs import has_checkpoint
from kdlab.train.trainer import Trainer, TrainerConfig


@dataclass
class CTCWarmupConfig(JsonConfig):
    """Steps (0 = no warm-start), peak learning rate and linear warm-up of the CTC phase, and the
    weight of the CTC loss kept beside the RNN-T loss afterwards (0 = none)."""

    steps: int = 0
    lr: float = 2e-3
    warmup_steps: int = 30
    aux_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight (CTC weight beside the RNN-T loss) must be >= 0, got {self.aux_weight}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0 and warmup_steps >= 0, got lr={self.lr}, warmup_steps={self.warmup_steps}")


class EncoderCTC(nn.Module):
    """Encoder + linear CTC head: ``forward(batch)`` is the CTC loss summed over each utterance's
    tokens and averaged over the batch (the same scale as ``RNNTModel``'s loss)."""

    def __init__(self, encoder: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.d_model, vocab_size)

    def log_probs(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> (log-probabilities (B, T', V), T' lengths (B,))."""
        enc, enc_lengths, _ = self.encoder(features, lengths)
        return F.log_softmax(self.head(enc), dim=-1), enc_lengths

    def forward(self, batch) -> torch.Tensor:
        log_probs, enc_lengths = self.log_probs(batch.features, batch.feature_lengths)
        return ctc_loss(log_probs, enc_lengths, batch.tokens, batch.token_lengths)


def ctc_loss(
    log_probs: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
) -> torch.Tensor:
    """log_probs (B, T', V), lengths (B,), tokens (B, U) -> CTC loss summed per utterance, mean over B."""
    loss = F.ctc_loss(
        log_probs.transpose(0, 1), tokens, lengths, token_lengths, blank=0, reduction="sum", zero_infinity=True
    )
    return loss / len(lengths)


class RNNTWithCTC(nn.Module):
    """An RNN-T model with a CTC head on its encoder output. ``forward(batch)`` -> (loss, parts):

        loss = RNN-T + weight · CTC        parts = {"loss_rnnt", "loss_ctc"} (detached)

    RNN-T is ``RNNTModel.transducer_loss``: with ``prune_range`` > 0 "loss_rnnt" is the pruned loss,
    and the simple joiner's loss (weighted into RNN-T) is logged as "loss_simple".

    ``rnnt`` is the model to keep; the head only shapes the encoder while it trains.
    """

    def __init__(self, rnnt: nn.Module, head: nn.Linear, weight: float) -> None:
        super().__init__()
        self.rnnt, self.head, self.weight = rnnt, head, weight

    def forward(self, batch) -> tuple[torch.Tensor, dict]:
        enc, enc_lengths = self.rnnt.transcribe(batch.features, batch.feature_lengths)
        transducer, parts = self.rnnt.transducer_loss(enc, enc_lengths, batch.tokens, batch.token_lengths)
        ctc = ctc_loss(F.log_softmax(self.head(enc), dim=-1), enc_lengths, batch.tokens, batch.token_lengths)
        parts = {"loss_rnnt": transducer.detach(), **parts, "loss_ctc": ctc.detach()}
        return transducer + self.weight * ctc, parts


def ctc_step(model: EncoderCTC, batch) -> tuple[torch.Tensor, dict]:
    """Trainer step: the mean CTC loss of `batch`."""
    return model(batch), {}


def check_ctc_alignable_at(encoder: nn.Module, data: SpeechData) -> None:
    """ValueError when the encoder's frame rate is too low for CTC over the tokenizer's train transcripts."""
    factor, fbank = encoder.config.subsampling_factor, FbankConfig()
    check_ctc_alignable(
        data.splits["train"],
        data.tokenizer,
        frame_ms=int(factor * fbank.hop_ms),
        encoder_frames=lambda seconds: subsampled_length(fbank.num_frames(round(seconds * fbank.sample_rate)), factor),
    )


def ctc_warm_start(
    encoder: nn.Module,
    data: SpeechData,
    config: CTCWarmupConfig,
    *,
    frames_per_batch: int,
    seed: int,
    run_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
) -> tuple[nn.Linear | None, dict]:
    """Train `encoder` in place for ``config.steps`` CTC steps in `run_dir` (resuming its checkpoint).

    Returns (the CTC head on the CPU, ``{"steps", "wall_seconds", "cpu_seconds", "final_loss"}``). With 0 steps the
    metrics are empty and the head is a fresh one when ``config.aux_weight`` > 0, else None.
    """
    if config.steps > 0 or config.aux_weight > 0:
        check_ctc_alignable_at(encoder, data)
    if config.steps == 0:
        head = nn.Linear(encoder.config.d_model, data.tokenizer.vocab_size) if config.aux_weight > 0 else None
        return head, {}

    model = EncoderCTC(encoder, data.tokenizer.vocab_size)
    trainer_config = TrainerConfig(
        max_steps=config.steps,
        lr=config.lr,
        warmup_steps=min(config.warmup_steps, config.steps),
        schedule="constant",
        seed=seed,
        progress=progress,
        device=device,
    )
    trainer = Trainer(
        model,
        trainer_config,
        ctc_step,
        data.train_loader(frames_per_batch, seed, None),
        run_dir=Path(run_dir),
        configs={"ctc_warmup": config.to_dict()},
    )
    if has_checkpoint(Path(run_dir)):
        trainer.load_checkpoint()
    history = trainer.fit()
    model.cpu()
    losses = history.series("train", "loss")[1]
    seconds = trainer.elapsed()
    return model.head, {
        "steps": trainer.step,
        "wall_seconds": seconds["wall"],
        "cpu_seconds": seconds["cpu"],
        "final_loss": losses[-1] if losses else None,
    }
