"""Expected parameter count and MACs of a gated / factorised conformer, differentiable in the gates.

**What is counted.** "Encoder parameters" are ``ConformerEncoder.num_parameters()``: every
parameter of the encoder except the gate modules; buffers (BatchNorm running statistics) are not
parameters. The count is that of the model ``materialise(encoder)`` would build, so at a
deterministic gate state (``deterministic=True``: a unit is kept iff its eval mask is non-zero)
``expected_params`` equals ``materialise(encoder).num_parameters()`` exactly.

**Expectation.** Each gated unit i is kept with probability p_i = P(z_i ≠ 0) (hard-concrete
closed form, differentiable in log α), independently. A residual branch (FFN, attention,
convolution) exists in the materialised model iff its branch gate is non-zero *and* at least one
of its units is kept (a branch with no unit left is folded away as a constant), so

    E[branch params] = P(branch gate ≠ 0) · a · cost(E[units] / a),   a = 1 − Π_i (1 − p_i),

where cost(u) counts, for u kept units, the branch's LayerNorm and output bias (fixed) plus each
unit's slices: a head its q/k/v rows with biases and its ``out_proj`` columns; an FFN unit its
``linear1`` row and bias and its ``linear2`` column; a conv channel its two pointwise rows (the GLU
pair) and biases, its depthwise filter and bias, its two BatchNorm parameters and its
``pointwise2`` column. For dense branches this is the exact expectation (cost is affine in u).
A low-rank layer with E[r] kept rank components (``LowRankLinear.gate``) and an m × n kept
weight costs E[r]·(m + n) where that is at most ⅔·m·n, else m·n (+ m bias): materialisation keeps
the factors only where they are faster (``lowrank.factors_are_faster``). The subsampling front-end,
the half-rate blocks' pair projection (``kdlab.models.half_rate``) and each block's final LayerNorm
are always counted.

**MACs per second of audio** count multiply-accumulates of linear maps, convolutions and the
two attention matmuls (QKᵀ and weights·V); elementwise work (norms, activations, rotary, softmax,
gating) is not counted. Attention cost depends on the utterance length: the count is for one
utterance of ``utterance_seconds`` (T' = round(frames_per_second · utterance_seconds) encoder
frames, i.e. sT' + s - 1 input frames at subsampling factor s), divided by its duration. Each query attends to T' keys
offline, and in a streaming encoder to the keys its chunk mask allows (its own chunk and
``left_chunks`` chunks before it), which is what ``stream()`` computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lowrank import LowRankLinear, factors_are_faster
from kdlab.compress.materialise import ConstantLinear
from kdlab.compress.structures import BRANCHES, branch_units, keep_probability
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.streaming import chunk_attention_mask

F64 = torch.float64


def _units_kept(gate: nn.Module | None, size: int, deterministic: bool, like: torch.Tensor):
    """(a, u): probability that at least one of ``size`` units is kept, and E[#kept | ≥ 1 kept]."""
    if isinstance(gate, HardConcreteGate) and not deterministic:
        # P(z = 0) = σ(−x) with x = log α − β log(−γ/ζ); log-space keeps a and its gradient finite
        x = gate.log_alpha.to(F64) - gate.beta * math.log(-gate.gamma / gate.zeta)
        alive = -torch.expm1(F.logsigmoid(-x).sum())
        return alive, torch.sigmoid(x).sum() / alive.clamp_min(torch.finfo(F64).tiny)
    kept = keep_probability(gate, size, like, deterministic=True).sum()
    return (kept > 0).to(F64), kept


def _bias(layer: nn.Module) -> int:
    bias = layer.second.bias if isinstance(layer, LowRankLinear) else layer.bias
    return 0 if bias is None else 1


def _weights(layer: nn.Module, rows, cols, deterministic: bool, like: torch.Tensor) -> torch.Tensor:
    """Weight parameters (= MACs per frame) of ``layer`` restricted to rows × cols."""
    if isinstance(layer, nn.Linear):
        return rows * cols * like.new_ones(())
    if isinstance(layer, LowRankLinear):
        rank = keep_probability(layer.gate, layer.rank, like, deterministic).to(F64).sum()
        dense = rows * cols * like.new_ones(())
        return torch.where(factors_are_faster(rank, rows, cols), rank * (rows + cols), dense)
    if isinstance(layer, ConstantLinear):
        return like.new_zeros(())
    raise TypeError(f"cannot count a {type(layer).__name__}: expected nn.Linear, LowRankLinear or ConstantLinear")


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _branch_cost(name: str, module: nn.Module, units, d_model: int, keys: float, deterministic: bool, like):
    """(params, MACs per frame) of one branch with ``units`` kept heads / units / channels."""

    def w(layer: nn.Module, rows, cols) -> torch.Tensor:
        return _weights(layer, rows, cols, deterministic, like)

    params, macs = _numel(module.norm) * like.new_ones(()), like.new_zeros(())
    if name == "attn":
        inner = units * module.head_dim
        for proj in (module.q_proj, module.k_proj, module.v_proj):
            weight = w(proj, inner, d_model)
            params, macs = params + weight + _bias(proj) * inner, macs + weight
        last, last_cols = module.out_proj, inner
        macs = macs + 2 * inner * keys
    elif name == "conv":
        weight = w(module.pointwise1, 2 * units, d_model)
        per_channel = (_numel(module.depthwise) + _numel(module.batch_norm)) // module.depthwise.in_channels
        params = params + weight + _bias(module.pointwise1) * 2 * units + per_channel * units
        macs = macs + weight + module.depthwise.weight[0].numel() * units
        last, last_cols = module.pointwise2, units
    else:
        weight = w(module.linear1, units, d_model)
        params, macs = params + weight + _bias(module.linear1) * units, macs + weight
        last, last_cols = module.linear2, units
    weight = w(last, d_model, last_cols)
    return params + weight + _bias(last) * d_model, macs + weight


def _cost(encoder: ConformerEncoder, deterministic: bool, frames: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected params, expected block MACs per encoder frame, subsampling linear included) for an
    utterance of ``frames`` encoder frames (None: parameters only, attention's matmuls not counted).
    A half-rate block sees ceil(frames / 2) frames: its MACs per frame are scaled by that share."""
    like = torch.zeros((), dtype=F64, device=next(encoder.parameters()).device)
    config = encoder.config
    d = config.d_model
    linear = encoder.subsampling.linear
    weight = _weights(linear, linear.out_features, linear.in_features, deterministic, like)
    params = _numel(encoder.subsampling) - _numel(linear) + weight + _bias(linear) * linear.out_features
    macs = weight
    half_share = 0.5 if frames is None else ((frames + 1) // 2) / frames
    if encoder.downsample is not None:  # a (D, 2D) projection per half-rate frame
        params, macs = params + _numel(encoder.downsample), macs + 2 * d * d * half_share
    for i, block in enumerate(encoder.blocks):
        half = config.runs_at_half_rate(i)
        keys = 0.0 if frames is None else attention_keys_per_query(encoder, frames, half)
        params = params + _numel(block.final_norm)
        for name in BRANCHES:
            module = getattr(block, name)
            if module is None:
                continue
            branch = keep_probability(getattr(block, f"{name}_gate"), 1, like, deterministic).to(F64)[0]
            alive, units = _units_kept(module.gate, branch_units(name, module), deterministic, like)
            branch_params, branch_macs = _branch_cost(name, module, units, d, keys, deterministic, like)
            params = params + branch * alive * branch_params
            macs = macs + branch * alive * branch_macs * (half_share if half else 1.0)
    return params, macs


def expected_params(encoder: ConformerEncoder, deterministic: bool = False) -> torch.Tensor:
    """E[#encoder parameters after materialisation], a float64 scalar differentiable in every
    gate's ``log_alpha`` (see the module docstring). ``deterministic=True``: the exact count at the
    current eval masks (no gradient), equal to ``materialise(encoder).num_parameters()``."""
    return _cost(encoder, deterministic, frames=None)[0]


def attention_keys_per_query(encoder: ConformerEncoder, frames: int, half_rate: bool = False) -> float:
    """Mean number of keys a query attends to in an utterance of ``frames`` encoder frames (in a
    half-rate block: of its ceil(frames / 2) frames, in chunks of chunk_size / 2)."""
    config = encoder.config
    if half_rate:
        frames, chunk_size = (frames + 1) // 2, config.chunk_size // 2
    else:
        chunk_size = config.chunk_size
    if not config.streaming:
        return float(frames)
    mask = chunk_attention_mask(frames, chunk_size, config.left_chunks)
    return float(mask.sum()) / frames


def expected_macs_per_second(
    encoder: ConformerEncoder,
    frames_per_second: float | None = None,
    utterance_seconds: float = 10.0,
    deterministic: bool = False,
) -> torch.Tensor:
    """E[MACs per second of audio] (float64 scalar, differentiable in the gates) for one utterance
    of ``utterance_seconds`` at ``frames_per_second`` encoder frames per second (default: 10 ms
    features through the encoder's subsampling, 25 at 4x, 12.5 at 8x); see the module docstring for
    what is counted."""
    if frames_per_second is None:
        frames_per_second = 100.0 / encoder.config.subsampling_factor
    if frames_per_second <= 0 or utterance_seconds <= 0:
        raise ValueError(
            f"frames_per_second and utterance_seconds must be > 0, got {frames_per_second} and {utterance_seconds}"
        )
    frames = round(frames_per_second * utterance_seconds)
    if frames < 1:
        raise ValueError(
            f"the utterance has no encoder frame ({frames_per_second} x {utterance_seconds} s); make it longer"
        )
    _, per_frame = _cost(encoder, deterministic, frames)
    return (front_end_macs(encoder, frames) + frames * per_frame) / utterance_seconds


def front_end_macs(encoder: ConformerEncoder, frames: int) -> int:
    """MACs of the subsampling convolutions that make ``frames`` encoder frames: each stride-2 stage
    outputs (time x frequency) cells, each costing its convolutions' weights (a depthwise 3x3: 9 per
    channel; a pointwise one: C²); stage i's time length is 2 x stage i+1's + 1."""
    stages = encoder.subsampling.convs
    times = [frames]
    for _ in stages[1:]:
        times.insert(0, 2 * times[0] + 1)
    macs, freq = 0, encoder.config.input_dim
    for stage, time in zip(stages, times):
        freq = (freq - 1) // 2
        macs += time * freq * sum(conv.weight.numel() for conv in stage)
    return macs
