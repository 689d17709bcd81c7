"""BEST-RQ self-supervised pre-training (Chiu et al. 2022): masked prediction of random-projection codes.

1. Targets: stack s input frames (B, T, F) -> (B, T//s, sF) to match the encoder's subsampling
   factor s (4 or 8; ``BestRQModel.stack``),
   project with a frozen random matrix, l2-normalise, and label each stacked frame with the
   index of the nearest l2-normalised code of a frozen random codebook
   (``RandomProjectionQuantizer``; nothing in it is trained).
2. Input: spans of input frames are replaced by noise N(0, 0.1²) (``mask_spans``).
3. The encoder sees the masked input; a linear head predicts the codes of the subsampled frames
   whose s input frames (sj .. sj+s-1) contain a masked frame; cross-entropy on those frames only.

Subsampled frame j is aligned with stacked frame j (input frames sj .. sj+s-1), so the encoder's
T' must be <= T // s (kdlab's conformer gives (T - s + 1) // s). Features are expected to be
normalised (CMVN), as the quantiser's projection assumes zero-mean, unit-scale inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import JsonConfig

STACK = 4


@dataclass
class BestRQConfig(JsonConfig):
    """Quantiser sizes and masking. ``mask_prob`` is the fraction of input frames masked, in
    spans of ``mask_span`` frames; ``seed`` fixes the (frozen) projection and codebooks."""

    codebook_dim: int = 16
    codebook_size: int = 1024
    num_codebooks: int = 1
    mask_prob: float = 0.4
    mask_span: int = 10
    noise_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("codebook_dim", "codebook_size", "num_codebooks", "mask_span"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob (fraction of frames masked) must be in (0, 1), got {self.mask_prob}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


def stack_frames(features: torch.Tensor, stack: int = STACK) -> torch.Tensor:
    """(B, T, F) -> (B, T // stack, stack * F); trailing frames that do not fill a group are dropped."""
    b, t, f = features.shape
    t = t // stack * stack
    return features[:, :t].reshape(b, t // stack, stack * f)


class RandomProjectionQuantizer(nn.Module):
    """Frozen random projection + random codebooks: stacked frames (B, T', input_dim) -> labels.

    Labels are (B, T', num_codebooks) int64: for each codebook, argmin_k ||c_k - p|| with
    p = normalise(x @ P) and unit-norm codes c_k (equivalently argmax_k <c_k, p>).
    Projection and codebooks are buffers (saved in ``state_dict``, never trained), drawn from
    a private generator seeded with ``seed``.
    """

    def __init__(
        self,
        input_dim: int = STACK * 80,
        codebook_dim: int = 16,
        codebook_size: int = 1024,
        num_codebooks: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(num_codebooks, input_dim, codebook_dim, generator=generator)
        projection *= (2.0 / (input_dim + codebook_dim)) ** 0.5  # Xavier-normal scale
        codebooks = torch.randn(num_codebooks, codebook_size, codebook_dim, generator=generator)
        self.register_buffer("projection", projection)
        self.register_buffer("codebooks", F.normalize(codebooks, dim=-1))

    @torch.no_grad()
    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """stacked (B, T', input_dim) -> labels (B, T', num_codebooks) int64."""
        projected = F.normalize(torch.einsum("btd,kde->btke", stacked.float(), self.projection), dim=-1)
        return torch.einsum("btke,kce->btkc", projected, self.codebooks).argmax(dim=-1)


def mask_spans(
    features: torch.Tensor,
    lengths: torch.Tensor,
    mask_prob: float,
    span: int,
    generator: torch.Generator | None = None,
    noise_std: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace non-overlapping spans of frames by noise N(0, noise_std²).

    Each utterance of length L gets n spans of ``span`` frames, placed uniformly at random
    without overlap inside its first L frames (padding is never masked): n is mask_prob·L / span
    rounded down or up at random so that E[n·span] = mask_prob·L (short utterances are masked
    too, some of the time), capped at L // span.

    features (B, T, F), lengths (B,) -> (masked features (B, T, F), frame_mask (B, T) bool).
    ``generator`` (a CPU generator) draws positions and noise; None uses the global CPU RNG.
    """
    batch_size, num_frames, _ = features.shape
    frame_mask = torch.zeros(batch_size, num_frames, dtype=torch.bool)
    for b, length in enumerate(lengths.tolist()):
        expected = mask_prob * length / span
        n = min(int(expected) + int(float(torch.rand((), generator=generator)) < expected % 1), length // span)
        if n == 0:
            continue
        # n spans among (length - n·span) free frames <=> n slots chosen among (length - n·span + n).
        slots = torch.randperm(length - n * span + n, generator=generator)[:n].sort().values
        starts = slots + torch.arange(n) * (span - 1)
        frame_mask[b, (starts[:, None] + torch.arange(span)).flatten()] = True
    noise = torch.randn(int(frame_mask.sum()), features.shape[2], generator=generator) * noise_std
    frame_mask = frame_mask.to(features.device)
    masked = features.clone()
    masked[frame_mask] = noise.to(device=features.device, dtype=features.dtype)
    return masked, frame_mask


def subsampled_mask(frame_mask: torch.Tensor, num_out: int, stack: int = STACK) -> torch.Tensor:
    """(B, T) input-frame mask -> (B, num_out): out frame j is masked if any of frames j·stack .. j·stack+stack-1 is."""
    b, t = frame_mask.shape
    if num_out * stack > t:
        raise ValueError(f"{num_out} subsampled frames need >= {num_out * stack} input frames, got {t}")
    return frame_mask[:, : num_out * stack].reshape(b, num_out, stack).any(dim=-1)


def masked_prediction_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy over masked frames only.

    logits (B, T', K, C), labels (B, T', K) int64, mask (B, T') bool -> (loss, accuracy), both
    scalars averaged over masked frames and the K codebooks. With no masked frame the loss
    is a zero that still has a graph and the accuracy is NaN.
    """
    selected, targets = logits[mask], labels[mask]  # (N, K, C), (N, K)
    if selected.shape[0] == 0:
        return logits.sum() * 0.0, torch.tensor(float("nan"), device=logits.device)
    loss = F.cross_entropy(selected.flatten(0, 1).float(), targets.flatten())
    accuracy = (selected.argmax(dim=-1) == targets).float().mean()
    return loss, accuracy.detach()


class BestRQModel(nn.Module):
    """Encoder + linear head (d_model -> num_codebooks x codebook_size) for BEST-RQ pre-training.

    Args:
        encoder: kdlab encoder contract; its ``config.subsampling_factor`` (4 when it has none) is
            the number of input frames stacked into one target.
        config: quantiser and masking settings.
        input_dim: feature bins F (stacked input of the quantiser is stack x F).
        encoder_dim: encoder width; default ``encoder.config.d_model``.
    """

    def __init__(
        self, encoder: nn.Module, config: BestRQConfig, input_dim: int = 80, encoder_dim: int | None = None
    ) -> None:
        super().__init__()
        if encoder_dim is None:
            if not hasattr(getattr(encoder, "config", None), "d_model"):
                raise ValueError("cannot infer the encoder width: pass encoder_dim=... (no encoder.config.d_model)")
            encoder_dim = encoder.config.d_model
        self.config = config
        self.encoder = encoder
        self.stack = getattr(getattr(encoder, "config", None), "subsampling_factor", STACK)
        self.quantizer = RandomProjectionQuantizer(
            self.stack * input_dim, config.codebook_dim, config.codebook_size, config.num_codebooks, config.seed
        )
        self.head = nn.Linear(encoder_dim, config.num_codebooks * config.codebook_size)

    def forward(
        self, batch_or_features, lengths: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``model(batch)`` or ``model(features (B,T,F), lengths (B,))`` -> (loss, masked accuracy).

        Masks are drawn from ``generator`` (default: the global RNG, which the trainer seeds).
        """
        if lengths is None:
            features, lengths = batch_or_features.features, batch_or_features.feature_lengths
        else:
            features = batch_or_features
        labels = self.quantizer(stack_frames(features, self.stack))  # (B, T // stack, K)
        c = self.config
        masked, frame_mask = mask_spans(features, lengths, c.mask_prob, c.mask_span, generator, c.noise_std)
        out, out_lengths, _ = self.encoder(masked, lengths)  # (B, T', D)
        num_out = out.shape[1]
        valid = torch.arange(num_out, device=out.device)[None, :] < out_lengths[:, None]
        mask = subsampled_mask(frame_mask, num_out, self.stack) & valid
        logits = self.head(out).unflatten(-1, (c.num_codebooks, c.codebook_size))
        return masked_prediction_loss(logits, labels[:, :num_out], mask)
