"""CTC warm-start: train the encoder alone with CTC before the RNN-T fine-tuning.

A transducer's predictor learns the transcripts' language model within a few hundred steps; the
loss then falls without the encoder and the model can sit on the blank plateau for thousands of
steps (greedy decoding gives one phrase for every utterance). CTC has no language model to lean
on, so its only way down is through the acoustics. Measured on the default corpus
(docs/teacher_calibration.md): CTC alone left the plateau after ~125 steps, CTC beside the
transducer loss (or with SpecAugment) had not after 300.

    encoder = ctc_warm_start(encoder, data, CTCWarmupConfig(steps=250, lr=2e-3), frames_per_batch=8000,
                             seed=0, run_dir=run_dir / "ctc_warmup")

The phase trains encoder + a linear CTC head (blank = id 0, the RNN-T blank), without
SpecAugment, with the shared ``Trainer`` (history, checkpoint and resume in ``run_dir``); the head
is dropped afterwards. The encoder's mode (offline or streaming mask) is whatever it was built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import JsonConfig
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.runs import has_checkpoint
from kdlab.train.trainer import Trainer, TrainerConfig


@dataclass
class CTCWarmupConfig(JsonConfig):
    """Steps (0 = no warm-start), peak learning rate and linear warm-up of the CTC phase."""

    steps: int = 0
    lr: float = 2e-3
    warmup_steps: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")
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
        loss = F.ctc_loss(log_probs.transpose(0, 1), batch.tokens, enc_lengths, batch.token_lengths, blank=0,
                          reduction="sum", zero_infinity=True)
        return loss / len(enc_lengths)


def ctc_step(model: EncoderCTC, batch) -> tuple[torch.Tensor, dict]:
    """Trainer step: the mean CTC loss of `batch`."""
    return model(batch), {}


def ctc_warm_start(encoder: nn.Module, data: SpeechData, config: CTCWarmupConfig, *, frames_per_batch: int,
                   seed: int, run_dir: str | Path, device: str = "auto", progress: bool = True) -> dict:
    """Train `encoder` in place for ``config.steps`` CTC steps in `run_dir` (resuming its checkpoint).

    Returns ``{"steps", "wall_seconds", "final_loss"}`` (an empty dict when ``config.steps`` is 0).
    """
    if config.steps == 0:
        return {}
    import time

    model = EncoderCTC(encoder, data.tokenizer.vocab_size)
    trainer_config = TrainerConfig(max_steps=config.steps, lr=config.lr, warmup_steps=min(config.warmup_steps,
                                   config.steps), schedule="constant", seed=seed, progress=progress, device=device)
    trainer = Trainer(model, trainer_config, ctc_step, data.train_loader(frames_per_batch, seed, None),
                      run_dir=Path(run_dir), configs={"ctc_warmup": config.to_dict()})
    if has_checkpoint(Path(run_dir)):
        trainer.load_checkpoint()
    start = time.perf_counter()
    history = trainer.fit()
    model.cpu()
    losses = history.series("train", "loss")[1]
    return {"steps": trainer.step, "wall_seconds": time.perf_counter() - start,
            "final_loss": losses[-1] if losses else None}
