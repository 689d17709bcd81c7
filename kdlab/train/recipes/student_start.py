"""The start every student row of the study shares: the SSL encoder and a seeded, fresh predictor / joiner.

    model = fresh_rnnt(student_encoder, rnnt_config, seed)     # predictor + joiner drawn from `seed` alone
    weights_digest(ssl.encoder), weights_digest(model.predictor, model.joiner)

``fresh_rnnt`` draws the predictor and joiner from a generator seeded with ``seed`` only (the
global RNG is left as it was), so two runs with the same seed and sizes start from identical
heads whatever they did before (compression, gates, factorisation). ``weights_digest`` hashes the
weights (names, shapes, dtypes, values): the runs record the digest of the SSL encoder they
started from and of their fresh heads, so a test can check that every row had the same start.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from kdlab.models.rnnt import RNNTConfig, RNNTModel


def fresh_rnnt(encoder: nn.Module, config: RNNTConfig, seed: int) -> RNNTModel:
    """``RNNTModel(encoder, config)`` with predictor and joiner drawn from ``seed`` alone, on the
    encoder's device (the encoder is used as is, not copied)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RNNTModel(encoder, config)
    return model.to(next(encoder.parameters()).device)


def weights_digest(*modules: nn.Module) -> str:
    """12-hex-digit hash of the modules' state dicts (every name, dtype, shape and value, in order)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def start_digests(ssl_encoder: nn.Module, model: RNNTModel) -> dict:
    """``{"ssl_encoder_digest", "fresh_heads_digest"}`` of a student's start (call before training)."""
    return {
        "ssl_encoder_digest": weights_digest(ssl_encoder),
        "fresh_heads_digest": weights_digest(model.predictor, model.joiner),
    }
