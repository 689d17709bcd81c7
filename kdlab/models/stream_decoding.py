"""Streaming RNN-T decoding: a greedy search fed encoder frames as they arrive, and a timed
chunk-by-chunk transcription of one utterance (what a streaming recogniser does per call).

* ``GreedyStream``: the greedy search of ``decoding.greedy_search`` for batch 1, advanced a few
  encoder frames at a time; the predictor state and the last symbol carry over between calls.
* ``stream_transcribe(model, features, feed_frames)``: ``feed_frames`` input frames (10 ms) per
  call to ``encoder.stream()``, the frames it emits decoded by ``GreedyStream``; each call timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from kdlab.models.rnnt import BLANK, RNNTModel

FRAME_SECONDS = 0.01  # one log-mel input frame


class GreedyStream:
    """Greedy RNN-T search fed encoder frames piece by piece (batch 1): the predictor state and the
    last symbol carry over, so the symbols equal ``decoding.greedy_search`` on all frames at once."""

    def __init__(self, model: RNNTModel, max_symbols_per_frame: int = 3) -> None:
        self.model, self.max_symbols = model, max_symbols_per_frame
        self.state = None
        with torch.inference_mode():
            self.pred = self._predict(torch.tensor([BLANK]))
        self.tokens: list[int] = []

    def _predict(self, token: torch.Tensor) -> torch.Tensor:
        """token (1,) -> projected predictor output (1, J); updates the predictor state."""
        out, self.state = self.model.predictor(token[:, None], self.state)
        return self.model.joiner.project_predictor(out[:, 0])

    @torch.inference_mode()
    def advance(self, enc: torch.Tensor) -> list[int]:
        """enc (1, k, E): the next k encoder frames -> the symbols decoded on them."""
        projected = self.model.joiner.project_encoder(enc)
        new = []
        for t in range(projected.shape[1]):
            for _ in range(self.max_symbols):
                logits = self.model.joiner.joint(projected[:, t], self.pred)
                best = int(torch.log_softmax(logits.float(), dim=-1).max(dim=-1).indices)  # as greedy_search
                if best == BLANK:
                    break
                new.append(best)
                self.pred = self._predict(torch.tensor([best]))
        self.tokens += new
        return new


@dataclass
class StreamCall:
    """One call of the streaming demo: audio received so far (s), encoder frames emitted and
    symbols decoded by this call, and its compute time (ms: encoder + decoder)."""

    received_s: float
    frames: int
    tokens: list[int]
    compute_ms: float


@dataclass
class StreamTrace:
    """Every call, all emitted encoder frames ``encoder_out`` (1, T', D) and all symbols."""

    calls: list[StreamCall]
    encoder_out: torch.Tensor
    tokens: list[int]


@torch.inference_mode()
def stream_transcribe(model: RNNTModel, features: torch.Tensor, feed_frames: int) -> StreamTrace:
    """Feed ``features`` (T, F) to a streaming model ``feed_frames`` input frames (10 ms) per call,
    as audio would arrive: ``encoder.stream()`` emits the chunks completed so far and
    ``GreedyStream`` decodes them; the last call flushes the partial chunk."""
    if feed_frames < 1:
        raise ValueError(f"feed_frames must be >= 1 (input frames per call), got {feed_frames}")
    encoder = model.encoder.eval()
    decoder, state, calls, outputs = GreedyStream(model.eval()), None, [], []
    for start in range(0, features.shape[0], feed_frames):
        piece = features[None, start : start + feed_frames]
        began = time.perf_counter()
        out, state = encoder.stream(piece, state, final=start + feed_frames >= features.shape[0])
        new = decoder.advance(out)
        elapsed = time.perf_counter() - began
        outputs.append(out)
        calls.append(StreamCall((start + piece.shape[1]) * FRAME_SECONDS, out.shape[1], new, elapsed * 1e3))
    return StreamTrace(calls, torch.cat(outputs, dim=1), decoder.tokens)
