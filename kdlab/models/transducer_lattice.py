"""The transducer forward–backward over a two-symbol lattice: −log P(y|x), its gradient, node occupation.

    nll, occupation = lattice_nll(lattice, enc_lengths, token_lengths)   # (B,), (B, T', U+1) no grad

lattice (B, T', U+1, 2) holds log-probabilities: channel 0 of blank at (t, u) (to (t+1, u)),
channel 1 of the next label y_{u+1} (to (t, u+1)). Paths start at (0, 0) and end with the blank
at (T'_b − 1, U_b); cells with t ≥ T'_b or u > U_b (padding) are ignored.

Why not torchaudio's ``rnnt_loss`` over this lattice (``fused_log_softmax=False``, targets all 1)?
It gives the same numbers and gradients, but its CPU kernel costs about 1 µs per lattice cell
whatever the vocabulary (≈ 0.1 s for a (24, 81, 55, 2) lattice on one thread, against ≈ 0.4 s for
the full V = 29 logits), which would take back most of what pruning saves. Here the recursion runs
frame by frame, each frame's run along u in one ``logcumsumexp``:

    alpha(t, u) = E(t, u) + logcumsumexp_{k ≤ u}[alpha(t−1, k) + blank(t−1, k) − E(t, k)]
    beta(t, u)  = −E(t, u) + logcumsumexp_{k ≥ u}[E(t, k) + blank(t, k) + beta(t+1, k)]
    E(t, u)     = Σ_{j<u} emit(t, j)

in float64 (E subtracts cumulative sums; pruned lattices hold −1e4 outside their windows, so E
reaches ~1e6 and float32 would lose the differences). The gradient of the NLL w.r.t. a transition's
log-probability is minus its posterior, exp(alpha + log p + beta(next) − log Z); the gradient is
computed with the forward pass and the backward pass only scales it. A node's occupation (expected
visits) is the sum of its two outgoing posteriors. Values must be finite (use a very negative number,
not −inf, for forbidden cells).
"""

from __future__ import annotations

import torch

F64 = torch.float64


#: blank and emit log-probabilities of the padded frames t >= T'_b: they carry the end of every
#: path (blank, probability 1) to the last frame, and practically never emit.
_PAD_BLANK, _PAD_EMIT = 0.0, -1.0e4


@torch.no_grad()
def forward_backward(
    lattice: torch.Tensor, enc_lengths: torch.Tensor, token_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL (B,) float64, ∂NLL/∂lattice (B, T', U+1, 2) float64) of lattice (B, T', U+1, 2); lengths (B,).

    Runs on a = alpha − E and b = beta + E, which makes each frame's step one add and one
    ``logcumsumexp``: a(t) = lcse_{k≤u}[a(t−1, k) + E(t−1, k) + blank(t−1, k) − E(t, k)], a(0) = 0.
    """
    batch, frames, labels, _ = lattice.shape
    if bool((enc_lengths < 1).any()) or int(enc_lengths.max()) > frames or int(token_lengths.max()) >= labels:
        raise ValueError(
            f"lengths do not fit the lattice {tuple(lattice.shape)}: enc_lengths {enc_lengths.tolist()} "
            f"(each in 1..{frames}), token_lengths {token_lengths.tolist()} (each < {labels})"
        )
    device = lattice.device
    blank, emit = lattice.detach().to(F64).unbind(dim=-1)  # (B, T', U+1) each
    u = torch.arange(labels, device=device)[None, None, :]
    t = torch.arange(frames, device=device)[None, :, None]
    last_label = token_lengths.to(device).long()[:, None, None]
    padded = t >= enc_lengths.to(device).long()[:, None, None]  # (B, T', 1)
    run_blank = blank.masked_fill(padded, _PAD_BLANK)
    # emits from u >= U_b lead nowhere: 0 keeps E finite, beta = -inf past U_b keeps them out
    run_emit = emit.masked_fill(padded, _PAD_EMIT).masked_fill(u >= last_label, 0.0)
    cumulative = torch.cat([torch.zeros_like(blank[:, :, :1]), run_emit[:, :, :-1]], dim=2).cumsum(dim=2)  # E
    into = cumulative[:, :-1] + run_blank[:, :-1] - cumulative[:, 1:]  # (B, T'-1, U+1)
    a = torch.zeros_like(blank)
    for frame in range(1, frames):
        a[:, frame] = torch.logcumsumexp(a[:, frame - 1] + into[:, frame - 1], dim=1)
    # beta in reversed label order, so that its sums over k >= u are running sums too
    cumulative_next = torch.cat([cumulative[:, 1:], torch.zeros_like(cumulative[:, :1])], dim=1)
    out_of = (cumulative + run_blank - cumulative_next).flip(2)
    b = torch.empty_like(blank)
    end = torch.where(u[:, 0] == last_label[:, 0], 0.0, -torch.inf).to(F64).flip(1)  # beta after the last frame
    for frame in reversed(range(frames)):
        end = b[:, frame] = torch.logcumsumexp(end + out_of[:, frame], dim=1)
    beta = b.flip(2) - cumulative
    outside = padded | (u > last_label)
    alpha = (a + cumulative).masked_fill(outside, -torch.inf)
    beta = beta.masked_fill(outside, -torch.inf)
    log_z = beta[:, 0, 0]
    final = torch.where(u == last_label, 0.0, -torch.inf).to(F64).expand(-1, 1, -1)
    after_blank = torch.where(t[:, 1:] >= enc_lengths.to(device).long()[:, None, None], final, beta[:, 1:])
    after_blank = torch.cat([after_blank, final], dim=1)  # beta(t+1, u), the end after the last frame
    after_emit = torch.cat([beta[:, :, 1:], torch.full_like(beta[:, :, :1], -torch.inf)], dim=2)
    base = alpha - log_z[:, None, None]
    grad = -torch.stack([(base + blank + after_blank).exp(), (base + emit + after_emit).exp()], dim=-1)
    return -log_z, grad


class _LatticeNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lattice, enc_lengths, token_lengths):
        nll, grad = forward_backward(lattice, enc_lengths, token_lengths)
        ctx.save_for_backward(grad.to(lattice.dtype))
        occupation = -grad.sum(dim=-1).to(lattice.dtype)
        ctx.mark_non_differentiable(occupation)
        return nll.to(lattice.dtype), occupation

    @staticmethod
    def backward(ctx, grad_nll, _grad_occupation):
        (grad,) = ctx.saved_tensors
        return grad * grad_nll[:, None, None, None], None, None


def lattice_nll(
    lattice: torch.Tensor, enc_lengths: torch.Tensor, token_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(−log P(y|x) per utterance (B,) with its gradient to lattice (B, T', U+1, 2), node occupation
    (B, T', U+1) without gradient: the expected visits of each node (t, u), 0 outside the lattice)."""
    return _LatticeNLL.apply(lattice, enc_lengths, token_lengths)
