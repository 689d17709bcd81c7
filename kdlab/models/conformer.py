"""Prunable conformer encoder (offline and streaming).

features (B, T, 80) -> Subsampling (4x or 8x) -> dropout -> N x ConformerBlock -> (B, T', D)

Optionally a range of middle blocks runs at half the frame rate (``half_rate_blocks``, a temporal
U-Net: ``kdlab.models.half_rate``); input and output keep the front-end's rate.

Each ``ConformerBlock`` is ``x + 0.5 ffn1(x)``, ``+ attn``, ``+ conv``, ``+ 0.5 ffn2``, then
LayerNorm. Prunable places (each an attribute, default ``None``, which when set is an
``nn.Module`` whose ``forward()`` returns a mask):

* ``block.attn.gate`` -> (H,) per head, on each head's context before ``out_proj``;
* ``block.ffn1.gate`` / ``block.ffn2.gate`` -> (ffn_dim,) after SiLU;
* ``block.conv.gate`` -> (C,) per channel after BatchNorm and SiLU, before ``pointwise2`` (where
  the norm's batch statistics cannot divide it out; a channel is a GLU pair);
* ``block.ffn1_gate``, ``attn_gate``, ``conv_gate``, ``ffn2_gate`` -> () scalar multiplying
  that residual branch (0 skips it; the final LayerNorm stays).

A pruned (materialised) model keeps the same code: ``ConformerConfig.layer_dims`` gives
per-block sizes, and a size of 0 removes that branch (its module is ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from kdlab.config import JsonConfig
from kdlab.models.attention import MultiHeadSelfAttention, rotary_table
from kdlab.models.convolution import ConvolutionModule
from kdlab.models.feedforward import FeedForward
from kdlab.models.half_rate import PairDownsample, half_rate_lengths, repeat_to_full_rate, upsample
from kdlab.models.streaming import LayerCache, StreamingEncoderState, chunk_attention_mask, stream_step
from kdlab.models.subsampling import FACTORS, Subsampling

BRANCH_SIZES = ("num_heads", "ffn1_dim", "ffn2_dim", "conv_channels")


@dataclass(frozen=True)
class BlockDims:
    """Sizes of one block's branches; 0 means the branch is absent."""

    num_heads: int
    ffn1_dim: int
    ffn2_dim: int
    conv_channels: int


@dataclass
class ConformerConfig(JsonConfig):
    """Encoder hyper-parameters (JSON-serialisable; stored in every checkpoint).

    ``streaming`` selects chunked attention + causal depthwise convolution; ``chunk_size``
    counts frames after subsampling (``subsampling_factor`` x 10 ms each: at 4x, 16 = 640 ms; at
    8x, 8 = 640 ms); ``left_chunks`` = -1 means
    unlimited left context. ``head_dim`` is independent of ``d_model`` (even, for rotary).
    ``layer_dims`` (optional, one dict per block) overrides any of ``num_heads``,
    ``ffn1_dim``, ``ffn2_dim``, ``conv_channels`` for that block (0 removes the branch);
    both FFNs default to ``ffn_dim``. ``subsampling_channels`` sets the front-end's conv
    channels (None: ``d_model``); its second 3x3 conv costs channels² MACs per output cell, so
    on a CPU a narrower front-end (e.g. 32–64) saves much of the encoder's time.
    ``subsampling_factor`` 4 or 8 (``kdlab.models.subsampling``): 8x halves the frames every block
    sees (and the RNN-T lattice's time axis).
    ``half_rate_blocks`` [a, b] (optional) runs blocks a .. b-1 at half the frame rate
    (``kdlab.models.half_rate``); 0 <= a < b < num_layers, so the last block is at full rate, and
    ``chunk_size`` must be even (a chunk's half-rate frames are chunk_size / 2).
    """

    input_dim: int = 80
    d_model: int = 144
    num_layers: int = 10
    num_heads: int = 4
    head_dim: int = 36
    ffn_dim: int = 576
    conv_channels: int = 144
    conv_kernel: int = 15
    dropout: float = 0.1
    streaming: bool = False
    chunk_size: int = 16
    left_chunks: int = -1
    layer_dims: list[dict] | None = field(default=None)
    subsampling_channels: int | None = None
    subsampling_factor: int = 4
    half_rate_blocks: list[int] | None = field(default=None)

    def __post_init__(self) -> None:
        positive = ("d_model", "num_layers", "num_heads", "head_dim", "ffn_dim", "conv_channels", "chunk_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.subsampling_factor not in FACTORS:
            raise ValueError(f"subsampling_factor must be one of {FACTORS}, got {self.subsampling_factor!r}")
        if not isinstance(self.input_dim, int) or self.input_dim < self.receptive_field:
            raise ValueError(
                f"input_dim must be an integer >= {self.receptive_field} ({self.subsampling_factor}x "
                f"subsampling), got {self.input_dim!r}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary embeddings rotate pairs), got {self.head_dim}")
        if not isinstance(self.conv_kernel, int) or self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be a positive odd integer, got {self.conv_kernel!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.left_chunks, int) or self.left_chunks < -1:
            raise ValueError(f"left_chunks must be -1 (unlimited) or a count >= 0, got {self.left_chunks!r}")
        if self.subsampling_channels is not None and (
            not isinstance(self.subsampling_channels, int) or self.subsampling_channels < 1
        ):
            raise ValueError(
                f"subsampling_channels must be None (d_model) or a positive integer, got {self.subsampling_channels!r}"
            )
        if self.layer_dims is not None:
            self._check_layer_dims()
        if self.half_rate_blocks is not None:
            self._check_half_rate_blocks()

    def _check_half_rate_blocks(self) -> None:
        span = self.half_rate_blocks
        if (
            not isinstance(span, (list, tuple))
            or len(span) != 2
            or not all(isinstance(v, int) for v in span)
            or not 0 <= span[0] < span[1] < self.num_layers
        ):
            raise ValueError(
                f"half_rate_blocks must be [a, b] with 0 <= a < b < num_layers ({self.num_layers}: the last block "
                f"runs at full rate), got {span!r}"
            )
        if self.chunk_size % 2:
            raise ValueError(f"half_rate_blocks needs an even chunk_size (pairs of frames), got {self.chunk_size}")
        self.half_rate_blocks = list(span)

    def _check_layer_dims(self) -> None:
        if len(self.layer_dims) != self.num_layers:
            raise ValueError(f"layer_dims must have one dict per block ({self.num_layers}), got {len(self.layer_dims)}")
        for i, dims in enumerate(self.layer_dims):
            unknown = set(dims) - set(BRANCH_SIZES)
            if unknown:
                raise ValueError(f"layer_dims[{i}] has unknown keys {sorted(unknown)}; allowed: {BRANCH_SIZES}")
            for key, value in dims.items():
                if not isinstance(value, int) or value < 0:
                    raise ValueError(f"layer_dims[{i}][{key!r}] must be an integer >= 0, got {value!r}")

    @property
    def receptive_field(self) -> int:
        """Input frames one encoder frame reads through the front-end (2 x factor - 1)."""
        return 2 * self.subsampling_factor - 1

    def runs_at_half_rate(self, index: int) -> bool:
        """Whether block ``index`` sees half-rate frames (``half_rate_blocks``)."""
        return self.half_rate_blocks is not None and self.half_rate_blocks[0] <= index < self.half_rate_blocks[1]

    def block_dims(self, index: int) -> BlockDims:
        """Branch sizes of block ``index`` (global sizes overridden by ``layer_dims``)."""
        dims = dict(
            num_heads=self.num_heads, ffn1_dim=self.ffn_dim, ffn2_dim=self.ffn_dim, conv_channels=self.conv_channels
        )
        if self.layer_dims is not None:
            dims.update(self.layer_dims[index])
        return BlockDims(**dims)


def teacher_config(size: str = "default", **overrides) -> ConformerConfig:
    """Preset encoders: "tiny" (tests, ~62 k params), "small" (~2.5 M), "default" (~5.4 M).

    Keyword ``overrides`` replace preset fields, e.g. ``teacher_config(streaming=True)``.
    """
    presets = {
        "tiny": dict(d_model=32, num_layers=2, num_heads=2, head_dim=16, ffn_dim=64, conv_channels=32, conv_kernel=5),
        "small": dict(
            d_model=144, num_layers=4, num_heads=4, head_dim=36, ffn_dim=576, conv_channels=144, conv_kernel=15
        ),
        "default": dict(
            d_model=144, num_layers=10, num_heads=4, head_dim=36, ffn_dim=576, conv_channels=144, conv_kernel=15
        ),
    }
    if size not in presets:
        raise ValueError(f"unknown teacher size {size!r}; choose one of {sorted(presets)}")
    return ConformerConfig(**{**presets[size], **overrides})


def _residual(x: torch.Tensor, branch: torch.Tensor, scale: float, gate: nn.Module | None) -> torch.Tensor:
    """x + scale * gate() * branch (the gate factor only when a gate is set)."""
    if gate is None:
        return torch.add(x, branch, alpha=scale)
    return x + branch * (gate() * scale)


class ConformerBlock(nn.Module):
    """One macaron conformer block; see the module docstring for its prunable places."""

    def __init__(self, config: ConformerConfig, dims: BlockDims) -> None:
        super().__init__()
        d, p = config.d_model, config.dropout
        self.ffn1 = FeedForward(d, dims.ffn1_dim, p) if dims.ffn1_dim else None
        self.attn = MultiHeadSelfAttention(d, dims.num_heads, config.head_dim, p) if dims.num_heads else None
        self.conv = (
            ConvolutionModule(d, dims.conv_channels, config.conv_kernel, p, causal=config.streaming)
            if dims.conv_channels
            else None
        )
        self.ffn2 = FeedForward(d, dims.ffn2_dim, p) if dims.ffn2_dim else None
        self.final_norm = nn.LayerNorm(d)
        self.ffn1_gate: nn.Module | None = None
        self.attn_gate: nn.Module | None = None
        self.conv_gate: nn.Module | None = None
        self.ffn2_gate: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor,
        rotary: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        past: LayerCache | None = None,
    ) -> tuple[torch.Tensor, LayerCache]:
        """x (B, T, D) -> (B, T, D) and this block's keys/values and conv tail.

        ``rotary`` (``rotary_table``) for x's absolute positions; ``attn_mask`` boolean (True = attend),
        broadcastable to (B, 1, T, P + T); ``pad_mask`` (B, T, 1) True at padding; ``past`` streaming caches.
        """
        kv = tail = None
        if self.ffn1 is not None:
            x = _residual(x, self.ffn1(x), 0.5, self.ffn1_gate)
        if self.attn is not None:
            out, kv = self.attn(x, rotary, attn_mask, None if past is None else past.kv)
            x = _residual(x, out, 1.0, self.attn_gate)
        if self.conv is not None:
            out, tail = self.conv(x, pad_mask, None if past is None else past.conv)
            x = _residual(x, out, 1.0, self.conv_gate)
        if self.ffn2 is not None:
            x = _residual(x, self.ffn2(x), 0.5, self.ffn2_gate)
        return self.final_norm(x), LayerCache(kv, tail)


def _masks(lengths: torch.Tensor, num_frames: int, config: ConformerConfig, padded: bool, chunk_size: int):
    """Boolean attention mask, True = may attend (None, (B,1,1,T) or (B|1,1,T,T)), and the
    (B, T, 1) padding mask, True at padded frames (None without padding)."""
    valid = torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
    allowed = valid[:, None, None, :] if padded else None
    if config.streaming:
        chunked = chunk_attention_mask(num_frames, chunk_size, config.left_chunks, lengths.device)
        allowed = chunked[None, None] if allowed is None else allowed & chunked
        # Padded query frames may find no allowed key; let every frame see itself (valid frames already do).
        allowed = allowed | torch.eye(num_frames, dtype=torch.bool, device=lengths.device)
    return allowed, (~valid[:, :, None] if padded else None)


class _RateContext(NamedTuple):
    """What the blocks at one frame rate share in a forward pass: rotary table and masks."""

    rotary: torch.Tensor
    attn_mask: torch.Tensor | None
    pad_mask: torch.Tensor | None


def _keep_last(kv: tuple[torch.Tensor, torch.Tensor] | None, frames: int | None):
    """Cached keys/values (B, H, P, head_dim) trimmed to their last ``frames`` frames (None: all)."""
    if kv is None or frames is None:
        return kv
    return tuple(t[:, :, -frames:] if frames else t[:, :, :0] for t in kv)


class ConformerEncoder(nn.Module):
    """Conformer encoder following the kdlab "Encoder" contract (docs/architecture.md)."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        self.subsampling = Subsampling(
            config.input_dim, config.d_model, config.subsampling_channels or config.d_model, config.subsampling_factor
        )
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(config, config.block_dims(i)) for i in range(config.num_layers))
        self.downsample = PairDownsample(config.d_model) if config.half_rate_blocks is not None else None

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """features (B, T, F), lengths (B,) int64 -> out (B, T', D), out_lengths (B,), hidden_states.

        T' = (T - s + 1) // s for subsampling factor s. ``hidden_states[0]`` is the input of the first
        block, ``hidden_states[i]`` the output of block i (all (B, T', D)). Frames at or past
        ``out_lengths`` hold unspecified values: mask them with the lengths.
        """
        if features.dim() != 3 or features.shape[2] != self.config.input_dim:
            raise ValueError(f"features must be (B, T, {self.config.input_dim}), got {tuple(features.shape)}")
        shortest, longest = (int(v) for v in torch.aminmax(lengths))
        field = self.config.receptive_field
        if shortest < field or longest > features.shape[1]:
            raise ValueError(
                f"lengths must lie in [{field}, T={features.shape[1]}] ({self.config.subsampling_factor}x subsampling "
                f"needs {field} frames), got min {shortest}, max {longest}"
            )
        x = self.dropout(self.subsampling(features))
        out_lengths = self.subsampling.output_lengths(lengths)
        hidden_states = self.forward_blocks(x, out_lengths)
        return hidden_states[-1], out_lengths, hidden_states

    def forward_blocks(self, x: torch.Tensor, lengths: torch.Tensor, padded: bool | None = None) -> list[torch.Tensor]:
        """Blocks only: x (B, T', D) subsampled frames, lengths (B,) -> [x, block 1 output, ...].

        ``padded`` None looks at ``lengths``; True always builds the padding masks (what a traced
        graph such as the ONNX export needs: no data-dependent branch), equal when nothing is padded.
        Every entry is (B, T', D): a half-rate block's output is repeated to the full rate.
        """
        t = x.shape[1]
        if padded is None:
            padded = bool((lengths < t).any())
        full = self._rate_context(lengths, t, padded, half=False)
        context, skip, hidden_states = full, None, [x]
        for i, block in enumerate(self.blocks):
            if self.config.half_rate_blocks is not None and i == self.config.half_rate_blocks[0]:
                skip, x = x, self.downsample(x, full.pad_mask)
                context = self._rate_context(half_rate_lengths(lengths), x.shape[1], padded, half=True)
            elif skip is not None and not self.config.runs_at_half_rate(i):
                x, skip, context = upsample(x, skip), None, full
            x, _ = block(x, context.rotary, context.attn_mask, context.pad_mask)
            hidden_states.append(repeat_to_full_rate(x, t) if skip is not None else x)
        return hidden_states

    def _rate_context(self, lengths: torch.Tensor, frames: int, padded: bool, half: bool) -> _RateContext:
        chunk_size = self.config.chunk_size // 2 if half else self.config.chunk_size
        attn_mask, pad_mask = _masks(lengths, frames, self.config, padded, chunk_size)
        return _RateContext(
            rotary_table(torch.arange(frames, device=lengths.device), self.config.head_dim), attn_mask, pad_mask
        )

    def run_chunk(
        self, x: torch.Tensor, position: int | torch.Tensor, pasts: list[LayerCache]
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Streaming: one chunk x (B, t, D) of subsampled frames, starting at absolute frame
        ``position`` (a multiple of ``chunk_size``), through every block with its caches ``pasts``
        -> (B, t, D) and the new caches, keys/values trimmed to the ``left_chunks`` context."""
        cfg = self.config
        t = x.shape[1]
        full = rotary_table(position + torch.arange(t, device=x.device), cfg.head_dim)
        rotary, skip, caches = full, None, []
        for i, (block, past) in enumerate(zip(self.blocks, pasts, strict=True)):
            if cfg.half_rate_blocks is not None and i == cfg.half_rate_blocks[0]:
                skip, x = x, self.downsample(x)
                rotary = rotary_table(position // 2 + torch.arange(x.shape[1], device=x.device), cfg.head_dim)
            elif skip is not None and not cfg.runs_at_half_rate(i):
                x, skip, rotary = upsample(x, skip), None, full
            x, cache = block(x, rotary, past=past)
            chunk = cfg.chunk_size // 2 if skip is not None else cfg.chunk_size
            keep = None if cfg.left_chunks < 0 else cfg.left_chunks * chunk
            caches.append(LayerCache(_keep_last(cache.kv, keep), cache.conv))
        return x, caches

    def stream(
        self, features: torch.Tensor, state: StreamingEncoderState | None = None, final: bool = False
    ) -> tuple[torch.Tensor, StreamingEncoderState]:
        """Exact chunk-by-chunk inference (streaming config, eval mode, no grad).

        Feed (B, n, F) new frames of B equally long streams (any n; ``state=None`` starts a
        stream). Returns the (B, k, D) encoder frames completed by this call (k is a multiple
        of ``chunk_size`` until ``final=True`` flushes the last partial chunk) and the updated
        state. Concatenated outputs equal ``forward`` on the whole input (same mask).
        """
        return stream_step(self, features, state, final)

    def num_parameters(self) -> int:
        """Parameters of the encoder itself, excluding attached gate modules."""
        gate_params = {
            id(p)
            for name, module in self.named_modules()
            if name.split(".")[-1].endswith("gate")
            for p in module.parameters()
        }
        return sum(p.numel() for p in self.parameters() if id(p) not in gate_params)
