"""RNN-T model: the loss against a hand-written forward algorithm, padding, gradients, predictor state."""

from __future__ import annotations

import pytest
import torch
from stand_ins import FakeBatch, StackEncoder
from torch import nn

from kdlab.models.rnnt import BLANK, RNNTConfig, RNNTModel

torch.set_num_threads(1)


CONFIG = RNNTConfig(vocab_size=6, pred_embed_dim=8, pred_hidden=12, pred_layers=2, joint_dim=10, dropout=0.0)


def make_model(seed: int = 0, config: RNNTConfig = CONFIG) -> RNNTModel:
    torch.manual_seed(seed)
    return RNNTModel(StackEncoder(), config).eval()


def make_batch(seed: int = 1) -> FakeBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([24, 13])  # T' = 6 and 3
    tokens = torch.tensor([[1, 3, 5, 2], [4, 4, 0, 0]])
    return FakeBatch(torch.randn(2, 24, 80, generator=g), lengths, tokens, torch.tensor([4, 2]))


def reference_nll(logits: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """-log P(y|x) by the RNN-T forward algorithm; logits (T, U+1, V) of one utterance."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    num_frames, num_tokens = logp.shape[0], len(targets)
    alpha = torch.full((num_frames, num_tokens + 1), -torch.inf, dtype=torch.float64)
    for t in range(num_frames):
        for u in range(num_tokens + 1):
            if t == 0 and u == 0:
                alpha[0, 0] = 0.0
                continue
            paths = []
            if t > 0:
                paths.append(alpha[t - 1, u] + logp[t - 1, u, BLANK])
            if u > 0:
                paths.append(alpha[t, u - 1] + logp[t, u - 1, targets[u - 1]])
            alpha[t, u] = torch.logsumexp(torch.stack(paths), dim=0)
    return -(alpha[-1, -1] + logp[-1, -1, BLANK])


@torch.no_grad()
def test_loss_equals_the_forward_algorithm():
    model, batch = make_model(), make_batch()
    loss, logits, enc_lengths = model(batch, return_logits=True)
    assert logits.shape == (2, 6, 5, CONFIG.vocab_size) and enc_lengths.tolist() == [6, 3]
    expected = [
        reference_nll(
            logits[b, : enc_lengths[b], : batch.token_lengths[b] + 1],
            batch.tokens[b, : batch.token_lengths[b]].tolist(),
        )
        for b in range(2)
    ]
    assert float(loss) == pytest.approx(float(sum(expected) / 2), rel=1e-5)


@torch.no_grad()
def test_padding_does_not_change_an_utterance_loss():
    model, batch = make_model(), make_batch()
    together = model(batch)
    alone = [
        model(
            batch.features[b : b + 1, : batch.feature_lengths[b]],
            batch.feature_lengths[b : b + 1],
            batch.tokens[b : b + 1, : batch.token_lengths[b]],
            batch.token_lengths[b : b + 1],
        )
        for b in range(2)
    ]
    assert float(together) == pytest.approx(float(sum(alone) / 2), rel=1e-5)


def test_gradients_reach_encoder_predictor_and_joiner():
    model = make_model()
    model(make_batch()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_predictor_stepwise_equals_full_sequence():
    model = make_model()
    tokens = torch.tensor([[0, 3, 1, 5], [0, 2, 2, 4]])
    full, _ = model.predictor(tokens)
    state, steps = None, []
    for u in range(tokens.shape[1]):
        out, state = model.predictor(tokens[:, u : u + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_joiner_project_then_joint_equals_forward():
    model = make_model()
    enc, pred = torch.randn(2, 5, 16), torch.randn(2, 3, CONFIG.pred_hidden)
    logits = model.joiner(enc, pred)
    assert logits.shape == (2, 5, 3, CONFIG.vocab_size)
    j = model.joiner
    torch.testing.assert_close(logits[1, 4, 2], j.joint(j.project_encoder(enc[1, 4]), j.project_predictor(pred[1, 2])))


def test_batch_and_tensor_calls_agree():
    model, batch = make_model(), make_batch()
    by_tensors = model(batch.features, batch.feature_lengths, batch.tokens, batch.token_lengths)
    assert torch.equal(model(batch), by_tensors)
    with pytest.raises(ValueError, match="needs tokens and token_lengths"):
        model(batch.features, batch.feature_lengths)


def test_config_round_trip_and_errors():
    assert RNNTConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 2"):
        RNNTConfig(vocab_size=1)
    with pytest.raises(ValueError, match="unknown RNNTConfig keys"):
        RNNTConfig.from_dict({"vocab": 5})
    with pytest.raises(ValueError, match="pass encoder_dim"):
        RNNTModel(nn.Identity(), CONFIG)


def test_with_the_real_conformer_encoder():
    from kdlab.models.conformer import ConformerEncoder, teacher_config

    torch.manual_seed(0)
    model = RNNTModel(ConformerEncoder(teacher_config("tiny", dropout=0.0)), CONFIG)
    batch = make_batch()
    loss, logits, enc_lengths = model(batch, return_logits=True)
    assert enc_lengths.tolist() == [5, 2]  # (T - 3) // 4
    assert logits.shape == (2, 5, 5, CONFIG.vocab_size) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
