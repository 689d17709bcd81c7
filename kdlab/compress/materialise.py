"""Materialisation: a gated and/or factorised encoder -> a physically smaller dense encoder.

``materialise(encoder)`` reads every gate's eval-mode (deterministic) mask and builds a new
``ConformerEncoder`` whose config has per-block ``layer_dims``, with sliced weights, so that in
eval mode it computes the same function (offline and streaming) with fewer parameters:

* heads / FFN units / conv channels with mask 0 are removed (q/k/v rows + ``out_proj`` columns;
  ``linear1`` rows + ``linear2`` columns; both GLU rows, the depthwise filter, the BatchNorm
  entries and the ``pointwise2`` column). Soft mask values are folded into the next layer's
  input columns: ``out_proj`` / ``linear2`` / ``pointwise2`` (every gate multiplies the input of
  its branch's last linear).
* a residual branch whose scalar gate is 0, or whose module is absent, is dropped (size 0); a soft
  branch gate scales that branch's last linear (weight and bias).
* a branch whose gate is open but whose units are *all* removed emits a constant vector c. It is
  dropped, and c is folded into the bias of the previous surviving branch of the same block, or,
  if there is none, into the producer of the block input (the previous block's final LayerNorm
  bias, the subsampling's linear bias for block 0, or the pair projection's bias for the first
  half-rate block). The encoder *output* is unchanged; in that
  last case ``hidden_states[i]`` (the block input) is shifted by c. (A per-block residual bias in
  the conformer would remove this caveat.)
* low-rank layers (``LowRankLinear``): rank components with gate mask 0 are dropped, soft values
  are folded into the second factor. A layer ends up low-rank only if its factors cost at most ⅔ of
  the dense MACs after slicing, r·(m + n) ≤ ⅔·m·n (``lowrank.factors_are_faster``: below that two
  thin products run slower than one); otherwise it is stored dense (A·B); with no component left it becomes a
  ``ConstantLinear`` (its bias). ``kdlab.compress.param_count`` counts exactly this.

The result is described by a ``CompressedEncoderSpec`` (conformer config + ranks of the low-rank
layers), which ``save_compressed`` stores beside the weights so that ``load_compressed`` rebuilds
the model without the original. All folding arithmetic runs in float64 and is cast back to the
encoder's dtype.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from kdlab.compress.lowrank import LowRankLinear, factors_are_faster
from kdlab.compress.structures import BRANCHES, branch_units, gate_mask, prunable_places
from kdlab.models.conformer import ConformerConfig, ConformerEncoder

#: Residual scale of each branch in ``ConformerBlock.forward`` (macaron half-steps for the FFNs).
BRANCH_SCALES = {"ffn1": 0.5, "attn": 1.0, "conv": 1.0, "ffn2": 0.5}
#: ``layer_dims`` key giving each branch's size.
BRANCH_SIZE_KEYS = {"ffn1": "ffn1_dim", "attn": "num_heads", "conv": "conv_channels", "ffn2": "ffn2_dim"}
FORMAT = "kdlab-compressed-encoder"


class ConstantLinear(nn.Module):
    """A rank-0 linear map: (..., in_features) -> (..., out_features), its bias at every position
    (zeros without bias). What a low-rank layer becomes when every rank component is pruned."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.out_features)
        if self.bias is None:
            return x.new_zeros(shape)
        return self.bias.expand(shape).contiguous()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@dataclass
class CompressedEncoderSpec:
    """Shapes of a materialised encoder: its conformer config (``to_dict()``) and, for each
    low-rank layer (dotted name), its rank (0 = ``ConstantLinear``). JSON-serialisable."""

    conformer: dict
    lowrank_ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompressedEncoderSpec:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            unknown = sorted(set(data) - known)
            raise ValueError(f"unknown CompressedEncoderSpec keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def encoder_spec(encoder: ConformerEncoder) -> CompressedEncoderSpec:
    """The spec of an encoder as it is (its config and the ranks of its low-rank / constant layers)."""
    ranks = {}
    for name, module in encoder.named_modules():
        if isinstance(module, LowRankLinear):
            ranks[name] = module.rank
        elif isinstance(module, ConstantLinear):
            ranks[name] = 0
    return CompressedEncoderSpec(encoder.config.to_dict(), ranks)


def build_encoder(spec: CompressedEncoderSpec) -> ConformerEncoder:
    """An encoder with the spec's shapes (fresh weights): ``ConformerEncoder`` with the listed
    ``nn.Linear`` layers swapped for ``LowRankLinear`` (rank ≥ 1) or ``ConstantLinear`` (rank 0)."""
    encoder = ConformerEncoder(ConformerConfig.from_dict(spec.conformer))
    for name, rank in spec.lowrank_ranks.items():
        linear = encoder.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"spec lists {name!r} as low-rank, but the encoder has a {type(linear).__name__} there")
        bias = linear.bias is not None
        if rank == 0:
            layer = ConstantLinear(linear.in_features, linear.out_features, bias)
        else:
            layer = LowRankLinear(linear.in_features, linear.out_features, rank, bias, allow_no_saving=True)
        parent, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent), child, layer)
    return encoder


class _LinearEdit:
    """Float64 working copy of a linear map y = left @ (right @ x) + bias, edited in place.

    ``right`` is None for a dense layer (``left`` = W, (m, n)); otherwise ``left`` (m, r) and
    ``right`` (r, n) are low-rank factors (r = 0 allowed) with the rank gate already folded in.
    """

    def __init__(self, left: torch.Tensor, right: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        self.left, self.right, self.bias = left, right, bias

    @classmethod
    def of(cls, module: nn.Module) -> _LinearEdit:
        f64 = torch.float64
        if isinstance(module, nn.Linear):
            bias = None if module.bias is None else module.bias.detach().to(f64)
            return cls(module.weight.detach().to(f64), None, bias)
        if isinstance(module, LowRankLinear):
            a, b = module.second.weight.detach().to(f64), module.first.weight.detach().to(f64)
            mask = gate_mask(module.gate, module.rank, a).detach()
            kept = mask != 0
            bias = None if module.second.bias is None else module.second.bias.detach().to(f64)
            return cls(a[:, kept] * mask[kept], b[kept], bias)
        if isinstance(module, ConstantLinear):
            bias = None if module.bias is None else module.bias.detach().to(f64)
            device = None if bias is None else bias.device
            zeros = (
                torch.zeros(module.out_features, 0, dtype=f64, device=device),
                torch.zeros(0, module.in_features, dtype=f64, device=device),
            )
            return cls(*zeros, bias)
        raise TypeError(
            f"cannot materialise a {type(module).__name__}: expected nn.Linear, LowRankLinear or ConstantLinear"
        )

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep output features ``index`` (rows of W and entries of the bias)."""
        self.left = self.left[index]
        self.bias = None if self.bias is None else self.bias[index]

    def select_columns(self, index: torch.Tensor, scale: torch.Tensor) -> None:
        """Keep input features ``index``, each multiplied by ``scale`` (the mask folded in)."""
        if self.right is None:
            self.left = self.left[:, index] * scale
        else:
            self.right = self.right[:, index] * scale

    def scale_output(self, factor: torch.Tensor) -> None:
        """Multiply the whole output (weight and bias) by a scalar."""
        self.left = self.left * factor
        self.bias = None if self.bias is None else self.bias * factor

    def zero_input_output(self) -> torch.Tensor:
        """(m,) output for an all-zero input: the bias (zeros without one)."""
        return self.bias if self.bias is not None else self.left.new_zeros(self.left.shape[0])

    def add_to_bias(self, value: torch.Tensor, where: str) -> None:
        if self.bias is None:
            raise ValueError(f"cannot fold a constant into {where}: it has no bias")
        self.bias = self.bias + value

    def finish(self, prefix: str) -> tuple[int | None, dict[str, torch.Tensor]]:
        """(rank, or None when dense; state entries under ``prefix``): factors only where they save."""
        rank = None if self.right is None else self.left.shape[1]
        if rank:
            m, n = self.left.shape[0], self.right.shape[1]
            if not factors_are_faster(rank, m, n):  # the factors save too little (lowrank's speed rule): W = A B
                self.left, self.right, rank = self.left @ self.right, None, None
        if rank is None:
            entries = {"weight": self.left, "bias": self.bias}
        elif rank == 0:
            entries = {"bias": self.bias}
        else:
            entries = {"first.weight": self.right, "second.weight": self.left, "second.bias": self.bias}
        return rank, {f"{prefix}.{k}": v for k, v in entries.items() if v is not None}


def _entries(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach() for k, v in module.state_dict().items()}


def _last_linear(name: str) -> str:
    return {"attn": "out_proj", "conv": "pointwise2"}.get(name, "linear2")


def _slice_branch(name: str, module: nn.Module, mask: torch.Tensor, prefix: str, state: dict, linears: dict) -> int:
    """Slice one branch with (units,) mask into ``state``/``linears``; returns the kept units."""
    kept = torch.nonzero(mask).reshape(-1)
    if name == "attn":
        hd = module.head_dim
        rows = (kept[:, None] * hd + torch.arange(hd, device=kept.device)).reshape(-1)
        for proj in ("q_proj", "k_proj", "v_proj"):
            linears[f"{prefix}.{proj}"] = edit = _LinearEdit.of(getattr(module, proj))
            edit.select_rows(rows)
        linears[f"{prefix}.out_proj"] = edit = _LinearEdit.of(module.out_proj)
        edit.select_columns(rows, mask[kept].repeat_interleave(hd))
    elif name == "conv":
        channels = module.depthwise.in_channels
        linears[f"{prefix}.pointwise1"] = edit = _LinearEdit.of(module.pointwise1)
        edit.select_rows(torch.cat([kept, kept + channels]))  # GLU value rows c and gate rows C + c
        linears[f"{prefix}.pointwise2"] = edit = _LinearEdit.of(module.pointwise2)
        edit.select_columns(kept, mask[kept])
        per_channel = {**_entries(module.depthwise, "depthwise"), **_entries(module.batch_norm, "batch_norm")}
        for key, value in per_channel.items():
            state[f"{prefix}.{key}"] = value[kept] if value.dim() > 0 else value
    else:
        linears[f"{prefix}.linear1"] = edit = _LinearEdit.of(module.linear1)
        edit.select_rows(kept)
        linears[f"{prefix}.linear2"] = edit = _LinearEdit.of(module.linear2)
        edit.select_columns(kept, mask[kept])
    state.update(_entries(module.norm, f"{prefix}.norm"))
    return int(kept.numel())


def _fold_constant(
    constant: torch.Tensor, last: tuple[str, float] | None, block: int, state: dict, linears: dict, config
) -> None:
    """Add a (D,) constant to block ``block``'s residual stream at the current point."""
    if last is not None:  # into the bias of the previous surviving branch (its residual scale undone)
        linears[last[0]].add_to_bias(constant / last[1], last[0])
    elif config.half_rate_blocks is not None and block == config.half_rate_blocks[0]:  # the pair projection's bias
        linears["downsample.linear"].add_to_bias(constant, "downsample.linear")
    elif block == 0:  # into the block input: the subsampling output (dropout is the identity in eval)
        linears["subsampling.linear"].add_to_bias(constant, "subsampling.linear")
    else:  # into the block input: the previous block's final LayerNorm
        key = f"blocks.{block - 1}.final_norm.bias"
        if key not in state:
            raise ValueError(f"cannot fold a dead branch's constant output: {key} does not exist")
        state[key] = state[key].to(torch.float64) + constant


@torch.no_grad()
def materialise(encoder: ConformerEncoder) -> ConformerEncoder:
    """A new, smaller ``ConformerEncoder`` equal to ``encoder`` in eval mode (see the module
    docstring), without gates, on the same device and dtype and in the same train/eval mode.
    The input encoder is not modified."""
    reference = next(encoder.subsampling.parameters())
    state = _entries(encoder.subsampling, "subsampling")
    state = {k: v for k, v in state.items() if not k.startswith("subsampling.linear.")}
    linears = {"subsampling.linear": _LinearEdit.of(encoder.subsampling.linear)}
    if encoder.downsample is not None:
        linears["downsample.linear"] = _LinearEdit.of(encoder.downsample.linear)
    layer_dims = []
    for i, block in enumerate(encoder.blocks):
        dims, last = {key: 0 for key in BRANCH_SIZE_KEYS.values()}, None
        for name in BRANCHES:
            module = getattr(block, name)
            if module is None:
                continue
            branch = gate_mask(getattr(block, f"{name}_gate"), 1, reference).to(torch.float64)[0]
            if branch == 0:
                continue
            units = gate_mask(module.gate, branch_units(name, module), reference).to(torch.float64)
            scale = BRANCH_SCALES[name]
            if not bool((units != 0).any()):  # open branch with no unit left: it emits a constant
                out = _LinearEdit.of(getattr(module, _last_linear(name))).zero_input_output()
                _fold_constant(scale * branch * out, last, i, state, linears, encoder.config)
                continue
            dims[BRANCH_SIZE_KEYS[name]] = _slice_branch(name, module, units, f"blocks.{i}.{name}", state, linears)
            last = (f"blocks.{i}.{name}.{_last_linear(name)}", scale)
            linears[last[0]].scale_output(branch)
        state.update(_entries(block.final_norm, f"blocks.{i}.final_norm"))
        layer_dims.append(dims)
    ranks = {}
    for name, edit in linears.items():
        rank, entries = edit.finish(name)
        state.update(entries)
        if rank is not None:
            ranks[name] = rank
    spec = CompressedEncoderSpec({**encoder.config.to_dict(), "layer_dims": layer_dims}, ranks)
    compressed = build_encoder(spec).to(device=reference.device, dtype=reference.dtype)
    compressed.load_state_dict({k: v.to(reference.dtype) if v.is_floating_point() else v for k, v in state.items()})
    return compressed.train(encoder.training)


def save_compressed(encoder: ConformerEncoder, path: str | Path) -> None:
    """Save a materialised encoder: its ``CompressedEncoderSpec`` and its weights, to ``path``."""
    gated = [place.name for place in prunable_places(encoder) if place.gate is not None]
    if gated:
        raise ValueError(
            f"the encoder still has gates ({gated[:3]}{' ...' if len(gated) > 3 else ''}): "
            "call materialise(encoder) first and save the result"
        )
    torch.save({"format": FORMAT, "spec": encoder_spec(encoder).to_dict(), "state_dict": encoder.state_dict()}, path)


def load_compressed(path: str | Path, map_location: str | torch.device = "cpu") -> ConformerEncoder:
    """Rebuild an encoder saved by ``save_compressed`` from its stored shapes (eval mode)."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a compressed encoder saved by save_compressed (no '{FORMAT}' format tag)")
    encoder = build_encoder(CompressedEncoderSpec.from_dict(data["spec"]))
    reference = next(v for v in data["state_dict"].values() if v.is_floating_point())
    encoder.to(device=reference.device, dtype=reference.dtype)
    encoder.load_state_dict(data["state_dict"])
    return encoder.eval()
