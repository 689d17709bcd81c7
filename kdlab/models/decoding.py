"""RNN-T decoding: batched greedy search and a time-synchronous beam search.

Both walk the encoder frames left to right. On each frame a hypothesis either emits blank
(the frame ends) or emits a symbol and stays on the frame, at most ``max_symbols_per_frame``
symbols per frame; after that many it moves on to the next frame without a blank (so a
runaway model cannot loop forever). ``Hypothesis.score`` is the log-probability of the
path(s) taken under these rules.

Beam search: at every (frame, symbol-step) the candidates -- hypotheses that ended the frame
with blank and one-symbol extensions of the hypotheses still on the frame -- are pooled and
the best ``beam`` are kept. Hypotheses with the same symbols that ended the frame are merged
(their probabilities are added). With ``beam=1`` this is exactly greedy search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from kdlab.models.rnnt import BLANK, PredictorState, RNNTModel


@dataclass(frozen=True)
class Hypothesis:
    """Decoded symbol ids (no blanks) and the log-probability of the decoding path(s)."""

    tokens: tuple[int, ...]
    score: float


@dataclass(frozen=True)
class _BeamHyp:
    tokens: tuple[int, ...]
    score: float
    pred: torch.Tensor  # (J,) projected predictor output after `tokens`
    state: PredictorState  # (h, c), each (layers, 1, P)


def _check_max_symbols(max_symbols_per_frame: int) -> None:
    if not isinstance(max_symbols_per_frame, int) or max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be an integer >= 1, got {max_symbols_per_frame!r}")


def _predict(model: RNNTModel, tokens: torch.Tensor, state: PredictorState | None):
    """tokens (N,) -> projected predictor output (N, J) and the new state."""
    out, state = model.predictor(tokens[:, None], state)
    return model.joiner.project_predictor(out[:, 0]), state


@torch.inference_mode()
def greedy_search(
    model: RNNTModel, enc: torch.Tensor, enc_lengths: torch.Tensor, max_symbols_per_frame: int = 3
) -> list[Hypothesis]:
    """Batched greedy search. enc (B, T', E), enc_lengths (B,) -> one Hypothesis per utterance."""
    _check_max_symbols(max_symbols_per_frame)
    batch_size = enc.shape[0]
    enc_p = model.joiner.project_encoder(enc)  # (B, T', J)
    last = torch.full((batch_size,), BLANK, dtype=torch.long, device=enc.device)
    pred, state = _predict(model, last, None)
    scores = torch.zeros(batch_size, dtype=torch.float64, device=enc.device)
    tokens: list[list[int]] = [[] for _ in range(batch_size)]
    for t in range(int(enc_lengths.max()) if batch_size else 0):
        active = enc_lengths > t
        for _ in range(max_symbols_per_frame):
            logp = torch.log_softmax(model.joiner.joint(enc_p[:, t], pred).float(), dim=-1)  # (B, V)
            best_logp, best = logp.max(dim=-1)
            scores += torch.where(active, best_logp.double(), 0.0)
            active = active & (best != BLANK)
            if not bool(active.any()):
                break
            for b in active.nonzero()[:, 0].tolist():
                tokens[b].append(int(best[b]))
            new_pred, new_state = _predict(model, best, state)
            pred = torch.where(active[:, None], new_pred, pred)
            state = tuple(torch.where(active[None, :, None], new, old) for new, old in zip(new_state, state))
    return [Hypothesis(tuple(t), float(s)) for t, s in zip(tokens, scores.tolist())]


def _merge(ended: dict[tuple[int, ...], _BeamHyp], hyp: _BeamHyp) -> None:
    """Add `hyp` to the frame-ended hypotheses, summing probabilities of equal symbol sequences."""
    old = ended.get(hyp.tokens)
    if old is None:
        ended[hyp.tokens] = hyp
    else:
        high, low = max(old.score, hyp.score), min(old.score, hyp.score)
        ended[hyp.tokens] = replace(old, score=high + math.log1p(math.exp(low - high)))


def _extend(model: RNNTModel, active: list[_BeamHyp], chosen: list[tuple[float, int, int]]) -> list[_BeamHyp]:
    """Append token `v` to active[n] for each kept (score, n, v), running the predictor once for all."""
    if not chosen:
        return []
    parents = [active[n] for _, n, _ in chosen]
    device = parents[0].pred.device
    state = tuple(torch.cat([p.state[i] for p in parents], dim=1) for i in range(2))
    pred, state = _predict(model, torch.tensor([v for _, _, v in chosen], device=device), state)
    return [
        _BeamHyp(p.tokens + (v,), score, pred[k], (state[0][:, k : k + 1], state[1][:, k : k + 1]))
        for k, (p, (score, _, v)) in enumerate(zip(parents, chosen))
    ]


def _beam_search_one(model: RNNTModel, enc_p: torch.Tensor, beam: int, max_symbols: int) -> list[Hypothesis]:
    """enc_p (T', J) projected encoder frames of one utterance -> n-best list (best first)."""
    pred, state = _predict(model, torch.tensor([BLANK], device=enc_p.device), None)
    hyps = [_BeamHyp((), 0.0, pred[0], state)]
    for t in range(enc_p.shape[0]):
        ended: dict[tuple[int, ...], _BeamHyp] = {}
        active = hyps
        for step in range(max_symbols + 1):
            if not active:
                break
            if step == max_symbols:  # forced move to the next frame, as in greedy search
                for hyp in active:
                    _merge(ended, hyp)
                break
            logits = model.joiner.joint(enc_p[t], torch.stack([h.pred for h in active]))
            logp = torch.log_softmax(logits.double(), dim=-1)  # (N, V)
            for hyp, blank_logp in zip(active, logp[:, BLANK].tolist()):
                _merge(ended, replace(hyp, score=hyp.score + blank_logp))
            top_logp, top_ids = logp[:, 1:].topk(min(beam, logp.shape[1] - 1), dim=-1)
            pool = [(h.score, -1, key) for key, h in ended.items()]
            pool += [
                (hyp.score + lp, n, v + 1)
                for n, hyp in enumerate(active)
                for lp, v in zip(top_logp[n].tolist(), top_ids[n].tolist())
            ]
            kept = sorted(pool, key=lambda c: -c[0])[:beam]  # stable: on ties ended hyps (blank) win
            ended = {key: ended[key] for _, n, key in kept if n < 0}
            active = _extend(model, active, [c for c in kept if c[1] >= 0])
        hyps = sorted(ended.values(), key=lambda h: -h.score)[:beam]
    return [Hypothesis(h.tokens, h.score) for h in hyps]


@torch.inference_mode()
def beam_search(
    model: RNNTModel, enc: torch.Tensor, enc_lengths: torch.Tensor, beam: int = 4, max_symbols_per_frame: int = 3
) -> list[list[Hypothesis]]:
    """enc (B, T', E), enc_lengths (B,) -> per utterance its n-best list (at most `beam`, best first)."""
    _check_max_symbols(max_symbols_per_frame)
    if not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam must be an integer >= 1, got {beam!r}")
    enc_p = model.joiner.project_encoder(enc)
    return [
        _beam_search_one(model, enc_p[b, : int(enc_lengths[b])], beam, max_symbols_per_frame)
        for b in range(enc.shape[0])
    ]


def decode_hypotheses(
    model: RNNTModel, batch, method: str = "greedy", beam: int = 4, max_symbols_per_frame: int = 3
) -> list[Hypothesis]:
    """Best hypothesis per utterance of a `Batch` (eval mode, no grad; the model's mode is restored)."""
    if method not in ("greedy", "beam"):
        raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            enc, enc_lengths = model.transcribe(batch.features.to(device), batch.feature_lengths.to(device))
            if method == "greedy":
                return greedy_search(model, enc, enc_lengths, max_symbols_per_frame)
            return [nbest[0] for nbest in beam_search(model, enc, enc_lengths, beam, max_symbols_per_frame)]
    finally:
        model.train(was_training)


def decode(
    model: RNNTModel, batch, tokenizer, method: str = "greedy", beam: int = 4, max_symbols_per_frame: int = 3
) -> list[str]:
    """Transcripts of a `Batch` (features, feature_lengths) with greedy or beam search."""
    hyps = decode_hypotheses(model, batch, method, beam, max_symbols_per_frame)
    return [tokenizer.decode(list(h.tokens)) for h in hyps]
