"""RNN-T: predictor (embedding + LSTM), joiner, and the transducer loss around any encoder.

    features (B, T, F) --encoder--> enc (B, T', E)
    [blank, y_1 .. y_U] (B, U+1) --predictor--> pred (B, U+1, P)
    joiner(enc, pred) = out(tanh(W_e enc + W_p pred)) --> logits (B, T', U+1, V)
    loss = torchaudio.functional.rnnt_loss(logits, y, T'_lengths, U_lengths, blank=0), mean over B

Id 0 is the blank and also the predictor's start symbol. The encoder follows the kdlab encoder
contract: ``encoder(features, lengths) -> (out (B, T', E), out_lengths (B,), hidden_states)``.

Memory: the joiner materialises a (B, T', U+1, joint_dim) hidden tensor and (B, T', U+1, V)
logits, both kept for the backward pass (float32: 4 bytes each). For B=16, T'=150, U+1=61,
joint_dim=256, V=30 that is ~150 MB + ~18 MB (twice that with gradients); halve the batch
(or the frames per batch) when it does not fit. ``rnnt_loss`` computes the log-softmax
itself (``fused_log_softmax=True``), so the joiner returns raw logits.

With ``prune_range`` S > 0 the model trains on the pruned loss instead (``pruned_rnnt.py``): a
simple joiner (``RNNTModel.simple``, training only) picks S label positions per frame, the joiner
runs on (B, T', S, J), and the loss is pruned + ``simple_loss_scale`` · simple. Decoding, export and
``num_parameters`` ignore the simple joiner.

The method names ``transcribe`` / ``predict`` / ``join`` follow ``torchaudio.models.RNNT``;
the predictor state here is an LSTM ``(h, c)`` tuple, each (layers, B, P).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchaudio.functional import rnnt_loss

from kdlab.config import JsonConfig
from kdlab.models.pruned_rnnt import SimpleJoiner, pruned_transducer_nll

BLANK = 0

PredictorState = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RNNTConfig(JsonConfig):
    """Predictor and joiner sizes; ``vocab_size`` counts the blank (id 0). ``prune_range`` S: label
    positions per frame of the pruned training loss (0: the full lattice, >= 2 otherwise);
    ``simple_loss_scale``: the simple joiner's loss weight beside it."""

    vocab_size: int = 29
    pred_embed_dim: int = 128
    pred_hidden: int = 256
    pred_layers: int = 1
    joint_dim: int = 256
    dropout: float = 0.1
    prune_range: int = 0
    simple_loss_scale: float = 0.5

    def __post_init__(self) -> None:
        for name in ("pred_embed_dim", "pred_hidden", "pred_layers", "joint_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(
                f"vocab_size must be an integer >= 2 (blank + at least one symbol), got {self.vocab_size!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.prune_range, int) or self.prune_range < 0 or self.prune_range == 1:
            raise ValueError(
                f"prune_range must be 0 (full lattice) or an integer >= 2 (a window must hold an emit "
                f"and the blank after it), got {self.prune_range!r}"
            )
        if self.simple_loss_scale < 0:
            raise ValueError(f"simple_loss_scale must be >= 0, got {self.simple_loss_scale}")


class Predictor(nn.Module):
    """Label history -> predictor features. tokens (B, U) -> out (B, U, pred_hidden)."""

    def __init__(self, config: RNNTConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.pred_embed_dim)
        self.lstm = nn.LSTM(
            config.pred_embed_dim,
            config.pred_hidden,
            config.pred_layers,
            batch_first=True,
            dropout=config.dropout if config.pred_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor, state: PredictorState | None = None) -> tuple[torch.Tensor, PredictorState]:
        """tokens (B, U) int64, state None (start) or (h, c) each (layers, B, P) -> (out (B, U, P), new state).

        Step-wise decoding feeds one token at a time (U = 1) with the previous state.
        """
        out, state = self.lstm(self.dropout(self.embedding(tokens)), state)
        return self.dropout(out), state


class Joiner(nn.Module):
    """enc (..., E) and pred (..., P), broadcastable -> logits (..., V) = out(tanh(W_e enc + W_p pred)).

    ``project_encoder`` / ``project_predictor`` can be applied once and reused by ``joint``
    (what the decoders do).
    """

    def __init__(self, encoder_dim: int, config: RNNTConfig) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(encoder_dim, config.joint_dim)
        self.pred_proj = nn.Linear(config.pred_hidden, config.joint_dim)
        self.out = nn.Linear(config.joint_dim, config.vocab_size)

    def project_encoder(self, enc: torch.Tensor) -> torch.Tensor:
        return self.enc_proj(enc)

    def project_predictor(self, pred: torch.Tensor) -> torch.Tensor:
        return self.pred_proj(pred)

    def joint(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        """Projected enc and pred, broadcastable to (..., joint_dim) -> raw logits (..., V)."""
        return self.out(torch.tanh(enc_projected + pred_projected))

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """enc (B, T, E), pred (B, U, P) -> logits (B, T, U, V)."""
        return self.joint(self.project_encoder(enc).unsqueeze(2), self.project_predictor(pred).unsqueeze(1))


def _encoder_dim(encoder: nn.Module) -> int:
    config = getattr(encoder, "config", None)
    if config is None or not hasattr(config, "d_model"):
        raise ValueError("cannot infer the encoder width: pass encoder_dim=... (the encoder has no config.d_model)")
    return int(config.d_model)


def _check_frames(enc_lengths: torch.Tensor) -> None:
    if bool((enc_lengths < 1).any()):
        raise ValueError(f"every utterance needs >= 1 encoder frame, got enc_lengths {enc_lengths.tolist()}")


class RNNTModel(nn.Module):
    """Encoder + predictor + joiner with the RNN-T loss.

    Args:
        encoder: module following the kdlab encoder contract.
        config: predictor / joiner sizes.
        encoder_dim: encoder output width E; default ``encoder.config.d_model``.
    """

    def __init__(self, encoder: nn.Module, config: RNNTConfig, encoder_dim: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.predictor = Predictor(config)
        encoder_dim = encoder_dim if encoder_dim is not None else _encoder_dim(encoder)
        self.joiner = Joiner(encoder_dim, config)
        # drawn after predictor and joiner, so their initial weights do not depend on prune_range
        self.simple = SimpleJoiner(encoder_dim, config.pred_hidden, config.vocab_size) if config.prune_range else None

    def num_parameters(self) -> int:
        """Parameters of the model that decodes: encoder, predictor, joiner (not the training-only simple joiner)."""
        skip = set() if self.simple is None else {id(p) for p in self.simple.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def transcribe(self, sources: torch.Tensor, source_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> enc (B, T', E), enc_lengths (B,)."""
        enc, enc_lengths, _ = self.encoder(sources, source_lengths)
        return enc, enc_lengths

    def predict(
        self, targets: torch.Tensor, target_lengths: torch.Tensor, state: PredictorState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, PredictorState]:
        """Predictor over targets (B, U) -> (out (B, U, P), target_lengths, state)."""
        out, state = self.predictor(targets, state)
        return out, target_lengths, state

    def join(
        self,
        source_encodings: torch.Tensor,
        source_lengths: torch.Tensor,
        target_encodings: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """enc (B, T', E), pred (B, U, P) -> (logits (B, T', U, V), source_lengths, target_lengths)."""
        return self.joiner(source_encodings, target_encodings), source_lengths, target_lengths

    def forward(
        self,
        batch_or_features,
        lengths: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        token_lengths: torch.Tensor | None = None,
        return_logits: bool = False,
    ):
        """The training loss (scalar, ``transducer_loss``: mean over utterances of -log P(y|x)).

        Call as ``model(batch)`` with a ``Batch`` (features, feature_lengths, tokens, token_lengths)
        or ``model(features (B,T,F), lengths (B,), tokens (B,U) padded with 0, token_lengths (B,))``.
        With ``return_logits=True`` returns ``(loss, logits (B, T', U+1, V), enc_lengths (B,))``, the
        loss then being the full rnnt_loss over those logits whatever ``prune_range`` is.
        """
        if lengths is None:
            batch = batch_or_features
            features, lengths, tokens, token_lengths = (
                batch.features,
                batch.feature_lengths,
                batch.tokens,
                batch.token_lengths,
            )
        else:
            features = batch_or_features
        if tokens is None or token_lengths is None:
            raise ValueError("RNNTModel needs tokens and token_lengths (pass a Batch or all four tensors)")
        enc, enc_lengths = self.transcribe(features, lengths)
        if not return_logits:
            return self.transducer_loss(enc, enc_lengths, tokens, token_lengths)[0]
        logits = self.logits(enc, enc_lengths, tokens, token_lengths)
        return self.loss(logits, enc_lengths, tokens, token_lengths), logits, enc_lengths

    def prediction(self, tokens: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, U) -> predictor outputs (B, max(token_lengths)+1, P) over [blank, y_1 .. y_U]."""
        tokens = tokens[:, : int(token_lengths.max())]
        start = torch.full((tokens.shape[0], 1), BLANK, dtype=tokens.dtype, device=tokens.device)
        return self.predictor(torch.cat([start, tokens], dim=1))[0]

    def logits(
        self, enc: torch.Tensor, enc_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> torch.Tensor:
        """enc (B, T', E), tokens (B, U) -> logits (B, max(enc_lengths), max(token_lengths)+1, V)."""
        return self.joiner(enc[:, : int(enc_lengths.max())], self.prediction(tokens, token_lengths))

    def transducer_loss(
        self,
        enc: torch.Tensor,
        enc_lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
        logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """(the loss the model trains on, its parts detached) for enc (B, T', E), tokens (B, U); mean over B.

        ``prune_range`` 0: rnnt_loss over the full logits (``logits`` when the caller already has
        them, e.g. for output KD), parts {}. S > 0: pruned + ``simple_loss_scale`` · simple, parts
        {"loss_rnnt": pruned, "loss_simple": simple} (``logits`` unused: the same loss with or without KD).
        """
        if self.simple is None:
            logits = self.logits(enc, enc_lengths, tokens, token_lengths) if logits is None else logits
            return self.loss(logits, enc_lengths, tokens, token_lengths), {}
        _check_frames(enc_lengths)
        frames, labels = int(enc_lengths.max()), int(token_lengths.max())
        pruned, simple = pruned_transducer_nll(
            self.joiner,
            self.simple,
            enc[:, :frames],
            self.prediction(tokens, token_lengths),
            tokens[:, :labels],
            enc_lengths,
            token_lengths,
            self.config.prune_range,
        )
        pruned, simple = pruned.mean(), simple.mean()
        loss = pruned + self.config.simple_loss_scale * simple
        return loss, {"loss_rnnt": pruned.detach(), "loss_simple": simple.detach()}

    @staticmethod
    def loss(
        logits: torch.Tensor, enc_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> torch.Tensor:
        """rnnt_loss over logits (B, T', U+1, V) from ``logits``; mean over the batch."""
        _check_frames(enc_lengths)
        tokens = tokens[:, : logits.shape[2] - 1]
        with torch.autocast(logits.device.type, enabled=False):  # float32 even in a bf16 step
            return rnnt_loss(
                logits.float(),
                tokens.int(),
                enc_lengths.int(),
                token_lengths.int(),
                blank=BLANK,
                reduction="mean",
                fused_log_softmax=True,
            )
