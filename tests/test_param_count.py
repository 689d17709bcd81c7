"""Expected parameter count (exact expectation over gate states) and MACs per second of audio
(checked against torch's FLOP counter on real forward passes, offline and chunk-by-chunk)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kdlab.compress.factorise import factorise_encoder
from kdlab.compress.materialise import materialise
from kdlab.compress.param_count import expected_macs_per_second, expected_params
from kdlab.compress.structures import GateSet, L0Config, attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config

torch.set_num_threads(1)


def make_encoder(seed: int = 0, **overrides) -> ConformerEncoder:
    torch.manual_seed(seed)
    return ConformerEncoder(teacher_config("tiny", dropout=0.0, **overrides)).eval()


def set_log_alphas(gates: GateSet, seed: int, low: float, high: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates.gates.values():
            gate.log_alpha.copy_(torch.empty(gate.n).uniform_(low, high, generator=g))


def test_expected_params_is_the_exact_expectation_over_gate_states():
    """Enumerate every keep/drop state of a one-block model with 2 units per structure."""
    encoder = make_encoder(num_layers=1, ffn_dim=2, conv_channels=2)
    gates = attach_gates(encoder)
    encoder.blocks[0].conv_gate = encoder.blocks[0].ffn2_gate = None  # 10 binary gates: 1024 states
    gates = GateSet.from_encoder(encoder)
    set_log_alphas(gates, seed=0, low=-2.5, high=1.0)  # all-units-dropped states carry real mass
    expected = expected_params(encoder)
    units = [(gate, i) for gate in gates.gates.values() for i in range(gate.n)]
    probs = [float(gate.prob_nonzero().detach()[i]) for gate, i in units]
    total = 0.0
    for state in itertools.product((0, 1), repeat=len(units)):
        with torch.no_grad():
            for (gate, i), keep in zip(units, state):
                gate.log_alpha[i] = 6.0 if keep else -6.0
        weight = 1.0
        for p, keep in zip(probs, state):
            weight *= p if keep else 1.0 - p
        total += weight * expected_params(encoder, deterministic=True).item()
    assert expected.item() == pytest.approx(total, rel=1e-6)


def test_dense_encoder_counts_its_own_parameters():
    for overrides in (
        {},
        {"layer_dims": [{"num_heads": 1, "conv_channels": 0}, {"ffn1_dim": 7}]},
        {"num_layers": 3, "half_rate_blocks": [1, 2]},
    ):
        encoder = make_encoder(**overrides)
        assert expected_params(encoder).item() == encoder.num_parameters()


def counted_macs(encoder: ConformerEncoder, frames: int, stream: bool) -> float:
    """Half the FLOPs torch counts for one utterance of ``frames`` encoder frames (math SDPA)."""
    factor = encoder.config.subsampling_factor
    x = torch.randn(1, factor * frames + factor - 1, 80, generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        if stream:
            encoder.stream(x, final=True)
        else:
            encoder(x, torch.tensor([x.shape[1]]))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"streaming": True, "chunk_size": 4, "left_chunks": 1},
        {"streaming": True, "chunk_size": 5, "left_chunks": -1},
        {"subsampling_factor": 8},
        {"subsampling_factor": 8, "streaming": True, "chunk_size": 3, "left_chunks": 1},
        {"num_layers": 3, "half_rate_blocks": [1, 2]},
        {"num_layers": 3, "half_rate_blocks": [0, 2], "streaming": True, "chunk_size": 4, "left_chunks": 1},
    ],
)
def test_macs_match_the_flop_counter(overrides):
    frames, seconds = 23, 0.92  # 25 frames per second
    dense = make_encoder(**overrides)
    stream = overrides.get("streaming", False)
    macs = expected_macs_per_second(dense, 25, seconds).item() * seconds
    assert macs == pytest.approx(counted_macs(dense, frames, stream), rel=1e-12)
    gated = make_encoder(**overrides)
    factorise_encoder(gated, energy=0.5, rank_gates=True)
    attach_gates(gated, L0Config(ranks=False))
    set_log_alphas(GateSet.from_encoder(gated), seed=1, low=-4.0, high=4.0)
    small = materialise(gated)
    small_macs = expected_macs_per_second(small, 25, seconds).item() * seconds
    assert small_macs == pytest.approx(counted_macs(small, frames, stream), rel=1e-12)
    at_state = expected_macs_per_second(gated, 25, seconds, deterministic=True).item() * seconds
    assert at_state == pytest.approx(small_macs, rel=1e-12) and small_macs < macs


def test_attention_macs_grow_with_the_utterance_offline_only():
    offline, streaming = make_encoder(), make_encoder(streaming=True, chunk_size=4, left_chunks=0)
    short, long = (expected_macs_per_second(offline, utterance_seconds=s).item() for s in (2.0, 8.0))
    assert long > short
    short, long = (expected_macs_per_second(streaming, utterance_seconds=s).item() for s in (2.0, 8.0))
    assert long == pytest.approx(short, rel=1e-2)  # bounded context: per-second cost is flat


def test_expected_macs_are_differentiable_in_every_gate():
    encoder = make_encoder()
    gates = attach_gates(encoder)
    set_log_alphas(gates, seed=2, low=-2.0, high=2.0)
    expected_macs_per_second(encoder).backward()
    for name, gate in gates.gates.items():
        assert gate.log_alpha.grad is not None and (gate.log_alpha.grad > 0).all(), name


def test_bad_macs_arguments_are_refused():
    with pytest.raises(ValueError, match="must be > 0"):
        expected_macs_per_second(make_encoder(), frames_per_second=0)
    with pytest.raises(ValueError, match="no encoder frame"):
        expected_macs_per_second(make_encoder(), utterance_seconds=0.01)
