"""Multi-head self-attention with an explicit per-head structure and rotary positions.

Positional information: rotary embeddings (RoPE, Su et al. 2021) on queries and keys,
with *absolute* frame indices after subsampling. The score between frames i and j
then depends only on i - j, and a streaming caller that passes the absolute indices
of a chunk gets bit-for-bit the same rotations as the full-sequence forward, so
cached keys (stored already rotated) stay valid. Consecutive pairs of each head's
dimensions, (0, 1), (2, 3), ..., are rotated, so ``head_dim`` must be even.

Prunable place: ``gate`` (default ``None``). When set, it is an ``nn.Module`` whose
``forward()`` returns an ``(H,)`` mask; head ``h``'s context (softmax(QK^T) V, shape
``(B, T, head_dim)``) is multiplied by ``mask[h]`` just before the output projection.
A zero entry therefore equals removing head ``h`` (its q/k/v rows ``h*head_dim:
(h+1)*head_dim`` and the same ``out_proj`` columns). ``head_dim`` is independent of
``d_model``: removing heads shrinks the inner width ``num_heads * head_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotary_table(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """(T,) absolute frame indices -> (T, head_dim // 2) complex64 rotations e^{i pos w_k}.

    While exporting (``torch.export``, the ONNX exporter: no complex tensors there) the same
    rotations come as a (2, T, head_dim // 2) float32 table of cos and sin; ``apply_rotary`` takes
    either. Eager PyTorch keeps the complex form: one fused multiply, several times faster.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    if torch.compiler.is_exporting():
        return torch.stack((angles.cos(), angles.sin()))
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x0, x1) of (B, T, H, head_dim) by a ``rotary_table``; returns the same shape."""
    b, t, h, d = x.shape
    pairs = x.float().reshape(b, t, h, d // 2, 2)
    if table.is_complex():
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * table[:, None, :])
    else:
        x0, x1 = pairs[..., 0], pairs[..., 1]
        cos, sin = table[0][:, None, :], table[1][:, None, :]
        rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.reshape(b, t, h, d).to(x.dtype)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask (True = may attend) -> the same mask to add to the scores: 0, or the dtype's lowest value.

    Used while exporting: ONNX's translation of a *boolean* SDPA mask adds a NaN guard (IsNaN + Where
    over the whole (B, H, T, S) weights, about a tenth of an offline encoder call in ONNX Runtime:
    docs/deployment_speed.md), needless here since every row of our masks allows a key.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class MultiHeadSelfAttention(nn.Module):
    """Pre-norm self-attention branch: LayerNorm -> q/k/v -> SDPA -> [gate] -> out_proj -> dropout.

    Args:
        d_model: model width D.
        num_heads: heads H (after pruning, the number that remain).
        head_dim: width of each head (even); inner width is ``H * head_dim``.
        dropout: dropout on attention weights and on the branch output.
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.attn_dropout = num_heads, head_dim, dropout
        self.norm = nn.LayerNorm(d_model)
        self.q_proj = nn.Linear(d_model, inner)
        self.k_proj = nn.Linear(d_model, inner)
        self.v_proj = nn.Linear(d_model, inner)
        self.out_proj = nn.Linear(inner, d_model)
        self.dropout = nn.Dropout(dropout)
        self.gate: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor,
        rotary: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend from the frames of ``x`` to ``past`` keys/values followed by ``x``'s own.

        Args:
            x: (B, T, D) block input.
            rotary: ``rotary_table`` of the absolute positions of ``x``'s frames.
            attn_mask: boolean mask broadcastable to (B, 1, T, S), True where a query may attend,
                S = past + T keys; every row needs one True. ``None`` attends everywhere.
            past: cached (keys, values), each (B, H, P, head_dim), already rotated.
        Returns:
            (B, T, D) branch output and (keys, values) of shape (B, H, P + T, head_dim).
        """
        b, t, _ = x.shape
        h = self.norm(x)
        shape = (b, t, self.num_heads, self.head_dim)
        q = apply_rotary(self.q_proj(h).view(shape), rotary).transpose(1, 2)
        k = apply_rotary(self.k_proj(h).view(shape), rotary).transpose(1, 2)
        v = self.v_proj(h).view(shape).transpose(1, 2)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        p = self.attn_dropout if self.training else 0.0
        if attn_mask is not None and torch.compiler.is_exporting():
            attn_mask = additive_mask(attn_mask, q.dtype)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, T, hd)
        if self.gate is not None:
            ctx = ctx * self.gate().view(-1, 1, 1)
        out = self.out_proj(ctx.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))
        return self.dropout(out), (k, v)
