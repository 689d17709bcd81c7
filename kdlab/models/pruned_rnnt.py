"""Pruned RNN-T loss: the real joiner only on S label positions per frame, chosen by a cheap joiner.

The idea is k2's "pruned RNN-T" (Kuang et al., 2022); the code is written for kdlab.

    simple = SimpleJoiner(E, P, V)                       # am = Linear(E→V)(enc), lm = Linear(P→V)(pred)
    lattice = simple.lattice(enc, pred, tokens)          # (B, T', U+1, 2): log P(blank), log P(y_{u+1})
    simple_nll, occupation = lattice_nll(lattice, T'_lengths, U_lengths)   # (B,), (B, T', U+1) no grad
    starts = prune_bounds(occupation, T'_lengths, U_lengths, S)             # (B, T'), no grad
    pruned = pruned_lattice(joiner, enc_proj, pred_proj, tokens, starts, S)        # (B, T', U+1, 2)
    loss = mean_B[lattice_nll(pruned)[0] + simple_scale · simple_nll]

The simple joiner scores logit(t, u, v) = am[t, v] + lm[u, v]; its normaliser over v is one
matrix product, exp(am − max) @ exp(lm − max)ᵀ, so the full (B, T', U+1, V) tensor is never built.

**The DP** over both lattices is ``transducer_lattice.lattice_nll`` (it equals torchaudio's
``rnnt_loss`` over the full logits, gradients included: tests/test_pruned_rnnt.py). Cells outside
the windows hold ``FILL`` (−1e4, not −inf, which turns log-sum-exps into NaN): paths through
them get zero weight and every gradient stays finite.

**The windows.** Frame t keeps label positions [s_t, s_t + S). A path visits in frame t a run of
positions [a_t, b_t] (emits at a_t .. b_t − 1, blank at b_t), with a_0 = 0, a_{t+1} = b_t and
b_{T'−1} = U; every cell it uses must be kept. With s non-decreasing, such a path exists if and only if

    s_0 = 0,   s_{T'−1} ≥ U + 1 − S,   s_{t+1} − s_t ≤ S − 1

(the step bound is S − 1, not S: b_t lies in windows t and t+1, so they must overlap; given these,
b_t = s_{t+1} for t < T'−1 is such a path). From s_0 = 0 in steps of S − 1 the last window reaches
U only when U ≤ T'·(S − 1): ``effective_range`` widens S for the batch when an utterance needs it
(never at the default shapes: T' ≈ 67, U ≈ 40, S ≥ 2). ``prune_bounds`` takes per frame the window
holding the most occupation (expected visits of each node under the simple joiner) and then

1. clamps s_t into [L_t, H_t], L_t = max(0, h − (S−1)(T'−1−t)), H_t = min(h, (S−1)·t), h = max(0, U+1−S):
   the band from which s_0 = 0 and s_{T'−1} = h stay reachable (L_t ≤ H_t because U ≤ T'(S−1));
2. takes the running max (non-decreasing; stays in the band, L and H being non-decreasing);
3. takes s_t = min_{t' ≤ t} s_{t'} + (S−1)(t − t') (a running min of s_t − (S−1)·t): steps ≤ S − 1,
   still non-decreasing (s_{t+1} ≥ s_t ≥ the new s_t) and ≥ L_t (L_{t+1} ≤ L_t + S − 1), so
   s_0 = 0 and s_{T'−1} = h survive.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.models.transducer_lattice import lattice_nll

BLANK = 0
#: log-probability of the lattice cells outside the windows (finite, see the module docstring).
FILL = -1.0e4


def _next_labels(tokens: torch.Tensor) -> torch.Tensor:
    """tokens (B, U) -> (B, U+1) int64: y_{u+1} at label position u, blank (0) after the last one."""
    return torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1)], dim=1).long()


class SimpleJoiner(nn.Module):
    """The cheap joiner whose lattice picks the windows: logit(t, u, v) = am[t, v] + lm[u, v].

    Trained by the simple loss only (the pruned loss does not reach it); decoding never uses it.
    """

    def __init__(self, encoder_dim: int, pred_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.am = nn.Linear(encoder_dim, vocab_size)
        self.lm = nn.Linear(pred_dim, vocab_size)

    def lattice(self, enc: torch.Tensor, pred: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """enc (B, T', E), pred (B, U+1, P), tokens (B, U) -> log-probs (B, T', U+1, 2) of blank and y_{u+1}."""
        am, lm = self.am(enc).float(), self.lm(pred).float()  # (B, T', V), (B, U+1, V)
        am_max = am.detach().amax(dim=2, keepdim=True)
        lm_max = lm.detach().amax(dim=2, keepdim=True)
        # log Σ_v exp(am + lm) by one product; float64 keeps exp(am − max)·exp(lm − max) from underflowing
        products = torch.bmm((am - am_max).double().exp(), (lm - lm_max).double().exp().transpose(1, 2))
        norm = products.log().float() + am_max + lm_max.transpose(1, 2)  # (B, T', U+1)
        labels = _next_labels(tokens)
        am_emit = am.gather(2, labels[:, None, :].expand(-1, am.shape[1], -1))  # (B, T', U+1)
        lm_emit = lm.gather(2, labels[:, :, None])[:, None, :, 0]  # (B, 1, U+1)
        blank = am[:, :, BLANK : BLANK + 1] + lm[:, None, :, BLANK]
        emit = am_emit + lm_emit
        return torch.stack([blank - norm, emit - norm], dim=-1)


def effective_range(prune_range: int, enc_lengths: torch.Tensor, token_lengths: torch.Tensor) -> int:
    """S for this batch: at least ``prune_range`` and ceil(U_b / T'_b) + 1 for every utterance (so that
    windows in steps of S − 1 reach U_b), at most max U_b + 1 (the whole lattice)."""
    needed = int(((token_lengths + enc_lengths - 1) // enc_lengths).max()) + 1
    return min(int(token_lengths.max()) + 1, max(prune_range, needed))


@torch.no_grad()
def prune_bounds(
    occupation: torch.Tensor, enc_lengths: torch.Tensor, token_lengths: torch.Tensor, prune_range: int
) -> torch.Tensor:
    """Window starts s (B, T') int64 from occupation (B, T', U+1); S = ``prune_range`` must be
    ``effective_range`` of the batch. On the valid frames t < T'_b: s_0 = 0, the last window holds U_b,
    0 ≤ s_{t+1} − s_t ≤ S − 1; everywhere 0 ≤ s ≤ max(0, U_b + 1 − S) (padded frames hold that maximum)."""
    batch, frames, labels = occupation.shape
    span = prune_range - 1
    if prune_range > labels or bool((span * enc_lengths < token_lengths).any()):
        raise ValueError(f"prune_range {prune_range} cannot cover this batch's lattices: take effective_range()")
    highest = (token_lengths + 1 - prune_range).clamp(min=0)[:, None]  # (B, 1): the window ending at U_b
    sums = torch.cat([occupation.new_zeros(batch, frames, 1), occupation.cumsum(dim=2)], dim=2)
    window = sums[:, :, prune_range:] - sums[:, :, : labels + 1 - prune_range]  # (B, T', U_max + 2 − S)
    starts = torch.arange(window.shape[2], device=occupation.device)
    window = window.masked_fill(starts[None, None, :] > highest[:, :, None], -1.0)
    best = window.argmax(dim=2)  # (B, T')
    t = torch.arange(frames, device=occupation.device)[None, :]
    lowest_allowed = (highest - span * (enc_lengths[:, None] - 1 - t)).clamp(min=0)  # the end stays in reach
    highest_allowed = (span * t).clamp(max=highest)  # reachable from s_0 = 0
    best = torch.minimum(torch.maximum(best, lowest_allowed.clamp(max=highest)), highest_allowed)
    best = best.cummax(dim=1).values
    return (best - span * t).cummin(dim=1).values + span * t


def pruned_lattice(
    joiner: nn.Module,
    enc_projected: torch.Tensor,
    pred_projected: torch.Tensor,
    tokens: torch.Tensor,
    starts: torch.Tensor,
    prune_range: int,
) -> torch.Tensor:
    """The real joiner on the windows only, placed into the lattice.

    enc_projected (B, T', J), pred_projected (B, U+1, J) (``joiner.project_*``), tokens (B, U),
    starts (B, T') from ``prune_bounds`` -> log-probs (B, T', U+1, 2) float32 of blank and y_{u+1},
    ``FILL`` outside [s_t, s_t + S). The hidden tensor is (B, T', S, J), the logits (B, T', S, V).
    """
    batch, frames, width = enc_projected.shape
    index = starts[:, :, None] + torch.arange(prune_range, device=starts.device)  # (B, T', S)
    flat = index.reshape(batch, frames * prune_range, 1)
    pred_rows = pred_projected.gather(1, flat.expand(-1, -1, width)).reshape(batch, frames, prune_range, width)
    logp = torch.log_softmax(joiner.joint(enc_projected[:, :, None, :], pred_rows).float(), dim=-1)
    labels = _next_labels(tokens).gather(1, flat[..., 0]).reshape(batch, frames, prune_range, 1)
    picked = torch.cat([logp[..., BLANK : BLANK + 1], logp.gather(3, labels)], dim=-1)  # (B, T', S, 2)
    lattice = logp.new_full((batch, frames, pred_projected.shape[1], 2), FILL)
    return lattice.scatter(2, index[..., None].expand(-1, -1, -1, 2), picked)


def pruned_transducer_nll(
    joiner: nn.Module,
    simple: SimpleJoiner,
    enc: torch.Tensor,
    pred: torch.Tensor,
    tokens: torch.Tensor,
    enc_lengths: torch.Tensor,
    token_lengths: torch.Tensor,
    prune_range: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned NLL (B,), simple NLL (B,)) of enc (B, T', E), pred (B, U+1, P) (the predictor over
    [blank, y_1 .. y_U]), tokens (B, U), lengths (B,); windows of ``prune_range`` positions, widened to
    ``effective_range`` where the batch needs it."""
    simple_nll, occupation = lattice_nll(simple.lattice(enc, pred, tokens), enc_lengths, token_lengths)
    span = effective_range(prune_range, enc_lengths, token_lengths)
    starts = prune_bounds(occupation, enc_lengths, token_lengths, span)
    pruned = pruned_lattice(joiner, joiner.project_encoder(enc), joiner.project_predictor(pred), tokens, starts, span)
    return lattice_nll(pruned, enc_lengths, token_lengths)[0], simple_nll
