"""RNN-T greedy and beam search on rigged models (known answers) and on small real ones."""

from __future__ import annotations

import math

import pytest
import torch
from stand_ins import FakeBatch, StackEncoder
from torch import nn

from kdlab.models.decoding import beam_search, decode, decode_hypotheses, greedy_search
from kdlab.models.rnnt import BLANK, RNNTConfig, RNNTModel

torch.set_num_threads(1)


class CountingPredictor(nn.Module):
    """Predictor stand-in whose output (and state) is (symbols emitted so far, last symbol)."""

    def forward(self, tokens, state=None):
        h = torch.zeros(1, tokens.shape[0], 2) if state is None else state[0]
        outs = []
        for u in range(tokens.shape[1]):
            symbol = tokens[:, u]
            emitted = symbol != BLANK
            h = torch.stack([h[0, :, 0] + emitted, torch.where(emitted, symbol.float(), h[0, :, 1])], -1)[None]
            outs.append(h[0])
        return torch.stack(outs, dim=1), (h, h.clone())


class TableJoiner(nn.Module):
    """Joiner stand-in: probabilities = table(frame, count, last) given by a Python function."""

    def __init__(self, table) -> None:
        super().__init__()
        self.table = table

    def project_encoder(self, enc):
        return enc

    def project_predictor(self, pred):
        return pred

    def joint(self, enc_p, pred_p):
        enc_p, pred_p = torch.broadcast_tensors(enc_p, pred_p)
        pairs = zip(enc_p.reshape(-1, 2).tolist(), pred_p.reshape(-1, 2).tolist())
        rows = [self.table(int(e[0]), int(p[0]), int(p[1])) for e, p in pairs]
        return torch.tensor(rows).log().reshape(*enc_p.shape[:-1], -1)


def rigged_model(table, vocab_size: int) -> RNNTModel:
    model = RNNTModel(nn.Identity(), RNNTConfig(vocab_size=vocab_size), encoder_dim=2)
    model.predictor, model.joiner = CountingPredictor(), TableJoiner(table)
    return model


def frames(num_frames: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """enc (B, T, 2) whose first channel is the frame index (what TableJoiner reads)."""
    enc = torch.zeros(batch, num_frames, 2)
    enc[..., 0] = torch.arange(num_frames)
    return enc, torch.full((batch,), num_frames)


TARGET = [3, 1, 4, 1, 2]
DONE_AFTER_FRAME = [2, 2, 4, 5]  # symbols that should be out by the end of each frame


def emit_target(t: int, count: int, last: int) -> list[float]:
    """Emit TARGET[count] (p = 0.9) while behind schedule, else blank (p = 0.9)."""
    probs = [0.1 / 5] * 6
    probs[TARGET[count] if count < DONE_AFTER_FRAME[t] else BLANK] = 0.9
    return probs


def test_greedy_returns_the_rigged_sequence_with_its_path_score():
    model = rigged_model(emit_target, 6)
    [hyp] = greedy_search(model, *frames(4), max_symbols_per_frame=3)
    assert list(hyp.tokens) == TARGET
    assert hyp.score == pytest.approx(9 * math.log(0.9), abs=1e-5)  # 5 symbols + 4 frame-ending blanks
    [[beam_one]] = beam_search(model, *frames(4), beam=1, max_symbols_per_frame=3)
    assert beam_one.tokens == hyp.tokens and beam_one.score == pytest.approx(hyp.score, abs=1e-5)
    best = beam_search(model, *frames(4), beam=4, max_symbols_per_frame=3)[0][0]
    assert list(best.tokens) == TARGET and best.score >= hyp.score


def test_max_symbols_per_frame_caps_emissions():
    model = rigged_model(emit_target, 6)
    [hyp] = greedy_search(model, *frames(4), max_symbols_per_frame=1)
    assert list(hyp.tokens) == TARGET[:4]  # one per frame, then forced to move on
    [[beam_one]] = beam_search(model, *frames(4), beam=1, max_symbols_per_frame=1)
    assert beam_one.tokens == hyp.tokens and beam_one.score == pytest.approx(hyp.score, abs=1e-5)
    always_emit = rigged_model(lambda t, count, last: [0.01, 0.99], 2)
    [runaway] = greedy_search(always_emit, *frames(5), max_symbols_per_frame=2)
    assert len(runaway.tokens) == 10


def greedy_trap(t: int, count: int, last: int) -> list[float]:
    """Frame 0 prefers symbol 1 (0.45 vs 0.35), but after 1 frame 1 is uncertain and after 2 it is sure."""
    if t == 0:
        return [0.2, 0.45, 0.35]
    return {0: [0.5, 0.25, 0.25], 1: [0.34, 0.33, 0.33], 2: [0.9, 0.05, 0.05]}[last]


def test_beam_finds_a_better_sequence_than_greedy():
    model = rigged_model(greedy_trap, 3)
    [greedy] = greedy_search(model, *frames(2), max_symbols_per_frame=1)
    assert greedy.tokens == (1,) and greedy.score == pytest.approx(math.log(0.45 * 0.34), abs=1e-5)
    [[beam_one]] = beam_search(model, *frames(2), beam=1, max_symbols_per_frame=1)
    assert beam_one.tokens == greedy.tokens and beam_one.score == pytest.approx(greedy.score, abs=1e-5)
    nbest = beam_search(model, *frames(2), beam=2, max_symbols_per_frame=1)[0]
    assert nbest[0].tokens == (2,) and nbest[0].score == pytest.approx(math.log(0.35 * 0.9), abs=1e-5)
    assert nbest[0].score > greedy.score and nbest[1].tokens == (1,)


CONFIG = RNNTConfig(vocab_size=6, pred_embed_dim=8, pred_hidden=12, pred_layers=2, joint_dim=10, dropout=0.0)


def random_model(seed: int = 0) -> RNNTModel:
    torch.manual_seed(seed)
    model = RNNTModel(StackEncoder(), CONFIG).eval()
    with torch.no_grad():
        model.joiner.out.bias[BLANK] -= 0.5  # emit symbols now and then
    return model


def test_batched_greedy_equals_per_utterance_greedy_and_beam_one():
    model = random_model()
    enc = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([9, 4, 7])
    batched = greedy_search(model, enc, lengths, max_symbols_per_frame=2)
    assert sum(len(h.tokens) for h in batched) >= 6  # the comparison is not vacuous
    for b in range(3):
        alone = greedy_search(model, enc[b : b + 1, : lengths[b]], lengths[b : b + 1], max_symbols_per_frame=2)[0]
        [[beam_one]] = beam_search(model, enc[b : b + 1], lengths[b : b + 1], beam=1, max_symbols_per_frame=2)
        assert alone.tokens == batched[b].tokens == beam_one.tokens
        assert alone.score == pytest.approx(batched[b].score, abs=1e-4)
        assert beam_one.score == pytest.approx(batched[b].score, abs=1e-4)


class LetterTokenizer:
    def decode(self, ids):
        return "".join(" abcde"[i] for i in ids if i != BLANK)


def test_overfit_model_decodes_its_training_utterances():
    torch.manual_seed(0)
    model = RNNTModel(
        StackEncoder(d_model=32), RNNTConfig(vocab_size=6, pred_embed_dim=16, pred_hidden=32, joint_dim=32, dropout=0.0)
    )
    g = torch.Generator().manual_seed(3)
    batch = FakeBatch(
        torch.randn(2, 40, 80, generator=g),
        torch.tensor([40, 32]),
        torch.tensor([[1, 2, 3, 4, 5], [5, 5, 1, 0, 0]]),
        torch.tensor([5, 3]),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        optimizer.zero_grad()
        model(batch).backward()
        optimizer.step()
    assert model.training
    for method in ("greedy", "beam"):
        assert decode(model, batch, LetterTokenizer(), method=method, beam=3) == ["abcde", "eea"]
    assert model.training  # decoding restores the mode
    with pytest.raises(ValueError, match="method must be 'greedy' or 'beam'"):
        decode_hypotheses(model, batch, method="viterbi")
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        beam_search(model, torch.zeros(1, 2, 32), torch.tensor([2]), beam=0)
