"""Streaming: chunked attention masks and exact chunk-by-chunk inference.

In streaming mode the encoder sees the input in chunks of ``chunk_size`` frames
*after subsampling* (s x 10 ms each for subsampling factor s). A frame attends to every frame of its own chunk
and of the ``left_chunks`` chunks before it (-1: all of them), never to later
chunks; depthwise convolutions are causal. The full-sequence forward applies this
as a mask; ``stream_step`` computes the same numbers chunk by chunk with caches:

* subsampling: the input frames not yet consumed (output frame j reads input
  frames s·j .. s·j + 2s - 2, so at most 2s - 2 frames wait for more input);
* attention, per block: rotated keys and values of the last ``left_chunks`` chunks (half as many
  frames in half-rate blocks, ``kdlab.models.half_rate``);
* depthwise convolution, per block: the last ``kernel - 1`` GLU outputs.

A chunk is emitted once all its ``chunk_size`` frames exist (``final=True`` flushes
the last, shorter chunk), so the algorithmic latency is one chunk plus (s - 1) x 10 ms of
subsampling look-ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from kdlab.models.subsampling import subsampled_length


def chunk_attention_mask(
    num_frames: int, chunk_size: int, left_chunks: int, device: torch.device | None = None
) -> torch.Tensor:
    """(T, T) bool mask, True where query frame i may attend to key frame j.

    Allowed iff chunk(j) <= chunk(i) and (left_chunks < 0 or chunk(j) >= chunk(i) - left_chunks),
    with chunk(t) = t // chunk_size.
    """
    chunk = torch.arange(num_frames, device=device) // chunk_size
    delta = chunk[:, None] - chunk[None, :]
    allowed = delta >= 0
    if left_chunks >= 0:
        allowed &= delta <= left_chunks
    return allowed


class LayerCache(NamedTuple):
    """Per-block streaming cache: attention (keys, values), each (B, H, P, head_dim), and the
    (B, C, kernel - 1) depthwise-convolution tail. ``None`` where absent (start, pruned branch)."""

    kv: tuple[torch.Tensor, torch.Tensor] | None
    conv: torch.Tensor | None


@dataclass
class StreamingEncoderState:
    """Everything carried from one call of ``ConformerEncoder.stream`` to the next.

    Attributes:
        features: (B, n, F) input frames not yet consumed by the subsampling (n <= 2s - 2).
        pending: (B, m, D) subsampled frames waiting for their chunk to fill (m < chunk_size).
        position: absolute index (after subsampling) of ``pending[:, 0]``.
        layers: one ``LayerCache`` per block.
        finished: True after a call with ``final=True``.
    """

    features: torch.Tensor
    pending: torch.Tensor
    position: int
    layers: list[LayerCache]
    finished: bool = False


def _run_chunk(encoder, chunk: torch.Tensor, state: StreamingEncoderState) -> torch.Tensor:
    """Run one (B, t, D) chunk of subsampled frames through every block, updating caches."""
    out, state.layers = encoder.run_chunk(chunk, state.position, state.layers)
    state.position += chunk.shape[1]
    return out


@torch.no_grad()
def stream_step(
    encoder, features: torch.Tensor, state: StreamingEncoderState | None, final: bool
) -> tuple[torch.Tensor, StreamingEncoderState]:
    """Feed (B, n, F) new input frames (any n >= 0); see ``ConformerEncoder.stream``."""
    cfg = encoder.config
    if not cfg.streaming:
        raise ValueError("stream() needs a streaming encoder: build it with ConformerConfig(streaming=True)")
    if encoder.training:
        raise RuntimeError("stream() is for inference: call encoder.eval() first")
    if features.dim() != 3 or features.shape[2] != cfg.input_dim:
        raise ValueError(f"features must be (B, n, {cfg.input_dim}), got {tuple(features.shape)}")
    b = features.shape[0]
    if state is None:
        pending = features.new_zeros(b, 0, cfg.d_model)
        state = StreamingEncoderState(features[:, :0], pending, 0, [LayerCache(None, None)] * cfg.num_layers)
    if state.finished:
        raise RuntimeError("this stream already ended (final=True): pass state=None to start a new one")
    buffer = torch.cat((state.features, features), dim=1)
    stride = encoder.subsampling.stride
    n = subsampled_length(buffer.shape[1], stride)
    if n > 0:
        frames = encoder.subsampling(buffer[:, : stride * n + stride - 1])
        state.pending = torch.cat((state.pending, frames), dim=1)
        buffer = buffer[:, stride * n :]
    state.features = buffer
    outputs = []
    size = cfg.chunk_size
    while state.pending.shape[1] >= size or (final and state.pending.shape[1] > 0):
        chunk, state.pending = state.pending[:, :size], state.pending[:, size:]
        outputs.append(_run_chunk(encoder, chunk, state))
    state.finished = final
    out = torch.cat(outputs, dim=1) if outputs else features.new_zeros(b, 0, cfg.d_model)
    return out, state
