"""The RNN-T model as four traceable graphs: what `kdlab.deploy.onnx_export` hands to ``torch.onnx``.

* ``OfflineEncoderGraph``: features (B, T, F), lengths (B,) -> encoder frames (B, T', D), their
  lengths (B,), and the frames projected by the joiner (B, T', J) (the decoders need only those).
* ``StreamingChunkGraph``: one chunk step of a streaming encoder with every cache an explicit
  input and output, so a caller (ONNX Runtime) runs a stream chunk by chunk.
* ``PredictorStepGraph``: one label step of the LSTM predictor, its state explicit.
* ``JoinerGraph``: projected encoder and predictor vectors (N, J) -> logits (N, V).

Streaming protocol (``StreamingChunkGraph``): with subsampling factor ``s`` (4 or 8), the encoder's
chunk of ``t`` frames (s x 10 ms each, ``t = chunk_size`` except for the last, shorter chunk) starting
at subsampled frame ``p`` reads the input frames ``sp .. sp + st + s - 2`` (the subsampling's
(2s - 1)-frame window, stride s), so the caller passes those ``st + s - 1`` frames and keeps the last
``s - 1`` for the next chunk. Caches per block, in block
order, only for the branches the block has: attention keys and values (B, H, P, head_dim) (P = 0 at
the start, growing by t per chunk, trimmed to ``left_chunks * chunk_size`` frames when the context
is limited; half of each in half-rate blocks) and the causal convolution's (B, C, kernel - 1) tail (zeros at the start).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel
from kdlab.models.streaming import LayerCache
from kdlab.models.subsampling import subsampled_length


class OfflineEncoderGraph(nn.Module):
    """features (B, T, F), lengths (B,) int64 -> (enc (B, T', D), enc_lengths (B,), projected (B, T', J)).

    ``projection``: the joiner's encoder projection (``nn.Identity`` for the encoder alone).
    """

    def __init__(self, encoder: ConformerEncoder, projection: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projection = encoder, projection

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        x = self.encoder.subsampling(features)
        enc_lengths = self.encoder.subsampling.output_lengths(lengths)
        enc = self.encoder.forward_blocks(x, enc_lengths, padded=True)[-1]
        return enc, enc_lengths, self.projection(enc)


@dataclass(frozen=True)
class CacheSlot:
    """One cache tensor of a streaming step: its block, what it holds ("keys", "values", "conv")
    and its shape without the batch, with ``None`` for the growing past length."""

    block: int
    kind: str
    shape: tuple[int | None, ...]

    @property
    def name(self) -> str:
        return f"block{self.block}.{self.kind}"


def cache_slots(encoder: ConformerEncoder) -> list[CacheSlot]:
    """The caches a streaming step of ``encoder`` carries, in the graph's input order."""
    slots = []
    for i, block in enumerate(encoder.blocks):
        if block.attn is not None:
            heads = (block.attn.num_heads, None, block.attn.head_dim)
            slots += [CacheSlot(i, "keys", heads), CacheSlot(i, "values", heads)]
        if block.conv is not None:
            slots.append(CacheSlot(i, "conv", (block.conv.depthwise.in_channels, block.conv.kernel - 1)))
    return slots


def initial_caches(encoder: ConformerEncoder, batch: int) -> list[torch.Tensor]:
    """The caches at the start of a stream: no past keys/values (P = 0), zero convolution tails."""
    dtype = next(encoder.parameters()).dtype
    return [
        torch.zeros(batch, *(0 if d is None else d for d in slot.shape), dtype=dtype) for slot in cache_slots(encoder)
    ]


class StreamingChunkGraph(nn.Module):
    """features (B, 4t + 3, F), position () int64, *caches -> (enc (B, t, D), projected (B, t, J), *caches).

    ``position`` is the index (after subsampling) of the chunk's first frame; see the module docstring.
    ``projection``: the joiner's encoder projection (``nn.Identity`` for the encoder alone).
    """

    def __init__(self, encoder: ConformerEncoder, projection: nn.Module) -> None:
        super().__init__()
        config = encoder.config
        if not config.streaming:
            raise ValueError("a streaming step needs a streaming encoder (ConformerConfig(streaming=True))")
        self.encoder, self.projection = encoder, projection
        self.slots = cache_slots(encoder)

    def forward(self, features: torch.Tensor, position: torch.Tensor, *caches: torch.Tensor):
        x = self.encoder.subsampling(features)
        by_slot = dict(zip(((s.block, s.kind) for s in self.slots), caches))
        pasts = [
            LayerCache(
                (by_slot[i, "keys"], by_slot[i, "values"]) if block.attn is not None else None, by_slot.get((i, "conv"))
            )
            for i, block in enumerate(self.encoder.blocks)
        ]
        x, new = self.encoder.run_chunk(x, position, pasts)
        new_caches = [
            t
            for cache in new
            for t in ((*cache.kv,) if cache.kv is not None else ()) + ((cache.conv,) if cache.conv is not None else ())
        ]
        return (x, self.projection(x), *new_caches)


class PredictorStepGraph(nn.Module):
    """tokens (N, 1) int64, h, c (layers, N, P) -> (projected predictor output (N, J), h, c)."""

    def __init__(self, model: RNNTModel) -> None:
        super().__init__()
        self.predictor, self.joiner = model.predictor, model.joiner

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h, c) = self.predictor(tokens, (h, c))
        return self.joiner.project_predictor(out[:, 0]), h, c


class JoinerGraph(nn.Module):
    """enc_projected (N, J), pred_projected (N, J) -> logits (N, V)."""

    def __init__(self, model: RNNTModel) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        return self.joiner.joint(enc_projected, pred_projected)


def chunk_input_frames(chunk_frames: int, stride: int) -> int:
    """Input (10 ms) frames a chunk of ``chunk_frames`` encoder frames reads at subsampling ``stride``:
    stride · t + stride - 1."""
    return stride * chunk_frames + stride - 1


def stream_chunks(num_input_frames: int, chunk_size: int, stride: int) -> list[tuple[int, int]]:
    """(encoder frames in the chunk, index of its first encoder frame) for each chunk of an utterance
    of ``num_input_frames`` input frames; the last chunk is shorter when the frames do not fill it."""
    total = subsampled_length(num_input_frames, stride)
    return [(min(chunk_size, total - first), first) for first in range(0, total, chunk_size)]
