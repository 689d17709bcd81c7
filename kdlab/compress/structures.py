"""L0 structures on the conformer: which units get a hard-concrete gate, and the gates as a set.

The encoder's prunable places (docs/architecture.md, "Prunable places") each hold one attribute
``gate`` (``None`` by default). ``attach_gates`` fills them with ``HardConcreteGate`` modules:

    structure        place                                      mask shape       init keep prob
    heads            blocks.i.attn.gate                         (H,)             0.99
    ffn_units        blocks.i.ffn1.gate, blocks.i.ffn2.gate     (ffn_dim,)       0.5 (DPHuBERT)
    conv_channels    blocks.i.conv.gate                         (C,) GLU pairs   0.99
    branches         blocks.i.{ffn1,attn,conv,ffn2}_gate        () scalar        0.99
    ranks            <LowRankLinear>.gate                       (rank,)          0.99

``branches`` gates whole sub-blocks (residual branches). A whole *layer* is pruned when its four
branch gates close; its final LayerNorm stays (2·D parameters), because the conformer has no
layer-level gate. ``ranks`` gates the rank components of low-rank layers (LRF + L0); it does
nothing on an encoder without ``LowRankLinear`` layers.

Gates are set with ``setattr``, so they are registered submodules: they appear in
``state_dict()`` (keys ending in ``.gate.log_alpha`` or ``_gate.log_alpha``) and move with
``.to()``. ``ConformerEncoder.num_parameters()`` excludes them.

Names used by ``GateSet``: the gate's module path without a trailing ``.gate``:
``blocks.3.attn`` (heads), ``blocks.3.ffn1`` (units), ``blocks.3.conv`` (channels),
``blocks.3.attn_gate`` (branch), ``blocks.3.attn.q_proj`` (rank components).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.lowrank import LowRankLinear
from kdlab.config import JsonConfig
from kdlab.models.attention import MultiHeadSelfAttention
from kdlab.models.conformer import ConformerBlock
from kdlab.models.convolution import ConvolutionModule
from kdlab.models.feedforward import FeedForward

#: Residual branches of a conformer block, in forward order.
BRANCHES = ("ffn1", "attn", "conv", "ffn2")
#: Gate kinds, in the order of the table above.
KINDS = ("heads", "ffn_units", "conv_channels", "branches", "ranks")


@dataclass
class L0Config(JsonConfig):
    """Which structures get hard-concrete gates, and each kind's initial keep probability.

    ``*_keep_prob`` is p = σ(log α) at init (see ``HardConcreteGate``). ``seed``: every gate gets
    its own noise generator seeded from (seed, gate name), see ``gate_seed``.
    """

    heads: bool = True
    ffn_units: bool = True
    conv_channels: bool = True
    branches: bool = True
    ranks: bool = True
    heads_keep_prob: float = 0.99
    ffn_units_keep_prob: float = 0.5
    conv_channels_keep_prob: float = 0.99
    branches_keep_prob: float = 0.99
    ranks_keep_prob: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        for kind in KINDS:
            p = getattr(self, f"{kind}_keep_prob")
            if not 0.0 < p < 1.0:
                raise ValueError(f"{kind}_keep_prob must be in (0, 1), got {p}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


class BranchGate(HardConcreteGate):
    """A single hard-concrete gate whose ``forward()`` returns a () scalar (a residual branch's gate).

    ``prob_nonzero()`` and ``deterministic_mask()`` keep the (1,) shape of a one-unit gate.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(1, **kwargs)

    def forward(self) -> torch.Tensor:
        return super().forward().reshape(())


@dataclass(frozen=True)
class Place:
    """One prunable place: ``setattr(owner, attribute, gate)`` sets its gate of ``size`` units."""

    name: str
    kind: str
    owner: nn.Module
    attribute: str
    size: int

    @property
    def gate(self) -> nn.Module | None:
        return getattr(self.owner, self.attribute)


def branch_units(name: str, module: nn.Module) -> int:
    """Gated units of a branch module: heads ("attn"), channels ("conv"), else FFN units."""
    if name == "attn":
        return module.num_heads
    if name == "conv":
        return module.depthwise.in_channels
    return module.linear2.in_features


def prunable_places(encoder: nn.Module) -> list[Place]:
    """Every prunable place of a conformer encoder (absent branches have none), in module order."""
    places = []
    for path, module in encoder.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, MultiHeadSelfAttention):
            places.append(Place(path, "heads", module, "gate", branch_units("attn", module)))
        elif isinstance(module, FeedForward):
            places.append(Place(path, "ffn_units", module, "gate", branch_units("ffn", module)))
        elif isinstance(module, ConvolutionModule):
            places.append(Place(path, "conv_channels", module, "gate", branch_units("conv", module)))
        elif isinstance(module, LowRankLinear):
            places.append(Place(path, "ranks", module, "gate", module.rank))
        elif isinstance(module, ConformerBlock):
            for branch in BRANCHES:
                if getattr(module, branch) is not None:
                    places.append(Place(f"{prefix}{branch}_gate", "branches", module, f"{branch}_gate", 1))
    return places


def gate_seed(seed: int, name: str) -> int:
    """Seed of the gate called ``name``: distinct per gate, reproducible for a given ``seed``."""
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF


def make_gate(kind: str, size: int, keep_prob: float, seed: int) -> HardConcreteGate:
    """A ``BranchGate`` for kind "branches", else a ``HardConcreteGate(size)``."""
    if kind == "branches":
        return BranchGate(init_keep_prob=keep_prob, seed=seed)
    return HardConcreteGate(size, init_keep_prob=keep_prob, seed=seed)


class GateSet:
    """The hard-concrete gates of an encoder, by name (see the module docstring for names).

    Attributes:
        gates: name -> ``HardConcreteGate`` (the modules living in the encoder).
        kinds: name -> one of ``KINDS``.
    """

    def __init__(self, gates: dict[str, HardConcreteGate], kinds: dict[str, str]) -> None:
        self.gates = gates
        self.kinds = kinds

    @classmethod
    def from_encoder(cls, encoder: nn.Module) -> GateSet:
        """Collect the ``HardConcreteGate`` modules set on ``encoder``'s prunable places."""
        gates, kinds = {}, {}
        for place in prunable_places(encoder):
            if isinstance(place.gate, HardConcreteGate):
                gates[place.name] = place.gate
                kinds[place.name] = place.kind
        return cls(gates, kinds)

    def __len__(self) -> int:
        return len(self.gates)

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every gate's ``log_alpha`` (for its own optimizer parameter group)."""
        for gate in self.gates.values():
            yield from gate.parameters()

    def probabilities(self) -> dict[str, torch.Tensor]:
        """name -> P(z ≠ 0) per unit, detached on the CPU: (H,), (ffn_dim,), (C,), (1,) or (rank,)."""
        return {name: gate.prob_nonzero().detach().cpu() for name, gate in self.gates.items()}

    def deterministic_masks(self) -> dict[str, torch.Tensor]:
        """name -> the eval-mode mask per unit (exact 0, soft, or exact 1), detached on the CPU."""
        return {name: gate.deterministic_mask().detach().cpu() for name, gate in self.gates.items()}


def attach_gates(encoder: nn.Module, config: L0Config | None = None) -> GateSet:
    """Set a fresh hard-concrete gate on every prunable place whose structure ``config`` enables.

    Gates take the device and dtype of the encoder's parameters and its train/eval mode. Raises
    ``ValueError`` if such a place already has a gate. Returns the ``GateSet`` of every hard-concrete gate now on the
    encoder (including any set earlier on places this call did not touch).
    """
    config = config or L0Config()
    reference = next(encoder.parameters())
    chosen = [place for place in prunable_places(encoder) if getattr(config, place.kind)]
    taken = [place.name for place in chosen if place.gate is not None]
    if taken:
        raise ValueError(
            f"these prunable places already have a gate: {taken[:5]}{' ...' if len(taken) > 5 else ''}; "
            "call remove_gates(encoder) first, or disable those structures in the L0Config"
        )
    for place in chosen:
        keep_prob = getattr(config, f"{place.kind}_keep_prob")
        gate = make_gate(place.kind, place.size, keep_prob, gate_seed(config.seed, place.name))
        gate = gate.to(device=reference.device, dtype=reference.dtype).train(encoder.training)
        setattr(place.owner, place.attribute, gate)
    return GateSet.from_encoder(encoder)


def remove_gates(encoder: nn.Module) -> GateSet:
    """Set every prunable place's gate back to ``None``; returns the hard-concrete gates removed."""
    removed = GateSet.from_encoder(encoder)
    for place in prunable_places(encoder):
        setattr(place.owner, place.attribute, None)
    return removed


def gate_mask(gate: nn.Module | None, size: int, like: torch.Tensor) -> torch.Tensor:
    """The eval-mode mask of a place, flattened to (size,): ones when ``gate`` is None.

    A ``HardConcreteGate`` gives ``deterministic_mask()``; any other gate module must return a
    deterministic mask from ``forward()``. ``like`` supplies device and dtype of the ones.
    """
    if gate is None:
        return torch.ones(size, device=like.device, dtype=like.dtype)
    mask = gate.deterministic_mask() if isinstance(gate, HardConcreteGate) else gate()
    return mask.reshape(-1).expand(size)


def keep_probability(gate: nn.Module | None, size: int, like: torch.Tensor, deterministic: bool) -> torch.Tensor:
    """(size,) probability that each unit is kept: P(z ≠ 0) (differentiable in log α), or with
    ``deterministic=True`` (and for gates other than ``HardConcreteGate``) 1.0 where the eval mask
    is non-zero and 0.0 where it is exactly 0."""
    if isinstance(gate, HardConcreteGate) and not deterministic:
        return gate.prob_nonzero().reshape(-1).expand(size)
    return (gate_mask(gate, size, like) != 0).to(like.dtype)
