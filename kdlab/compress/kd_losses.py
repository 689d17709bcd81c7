"""Knowledge-distillation losses: layer-to-layer (DPHuBERT style) and output KL with temperature.

**Layer distillation.** For each pair (i, j) of the layer map, student hidden state h_i^S
`(B, T, D_s)` is projected by its own learned `nn.Linear(D_s, D_t)` and compared with the teacher
state h_j^T `(B, T, D_t)` over the valid (non-padded) frames:

    loss_ij = L1(P h_i^S, h_j^T) + (1 − cos(P h_i^S, h_j^T))
    total   = mean over the pairs of loss_ij

L1 is the mean absolute difference over valid frames and feature dims, cos the mean over valid
frames of the cosine similarity along the feature dim. DPHuBERT writes the second term as −cos;
1 − cos is the same up to a constant, so gradients are identical, but the loss is ≥ 0 and exactly
0 at a perfect match. Indices follow the encoder contract: `hidden_states[0]` is the input of the
first block and `hidden_states[i]` the output of block i. The teacher states are targets: they
are detached.

Projection init: the rectangular identity `eye(D_t, D_s)` with zero bias — the identity when the
widths match (a student copied from the teacher starts at loss 0), otherwise it copies the first
min(D_s, D_t) coordinates (a narrower student fills the first D_s teacher dims, the rest start
at 0; a wider student's extra dims start ignored). Deterministic, so no seed is involved.

**Output distillation.** With p = softmax(z / T) over the last dim (classes),

    output_kl = T² · KL(p_teacher ‖ p_student) = T² · Σ_c p_t,c (log p_t,c − log p_s,c)

averaged over valid positions. The T² factor (Hinton et al. 2015) keeps the loss and its
gradients on the same scale across temperatures: as T → ∞, T²·KL → ½ · Var_c(z_t − z_s) (the
population variance over classes of the logit difference, i.e. logit matching), while without
it the loss would vanish like 1/T².
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import JsonConfig


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool mask `(B, max_len)`: True at positions t < lengths[b] (valid), False on padding.

    For RNN-T joint outputs `(B, T, U+1, V)` combine two masks by broadcasting:
    `length_mask(frame_lengths, T)[:, :, None] & length_mask(token_lengths + 1, U + 1)[:, None, :]`.
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape (B,), got {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.max()) > max_len:
        raise ValueError(f"a length ({int(lengths.max())}) exceeds the padded size {max_len}")
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _check_layer_map(layer_map: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs = [tuple(pair) for pair in layer_map]
    if not pairs:
        raise ValueError("layer_map is empty: give (student layer, teacher layer) pairs such as [(2, 4), (4, 8)]")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(i, int) and i >= 0 for i in pair):
            raise ValueError(f"layer_map entries must be (student_index, teacher_index) ints >= 0, got {pair!r}")
    return pairs


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    """Map student block i (1..L_s) to teacher block round(i · L_t / L_s): spread evenly, last to last.

    E.g. 4 student blocks, 12 teacher blocks → [(1, 3), (2, 6), (3, 9), (4, 12)].
    """
    if num_student_layers < 1 or num_teacher_layers < 1:
        raise ValueError(f"layer counts must be >= 1, got student {num_student_layers}, teacher {num_teacher_layers}")
    return [
        (i, (2 * i * num_teacher_layers + num_student_layers) // (2 * num_student_layers))
        for i in range(1, num_student_layers + 1)
    ]


class LayerDistillation(nn.Module):
    """Layer-to-layer KD: L1 + (1 − cos) through one learned projection per mapped pair.

    Args:
        student_dim, teacher_dim: widths D_s and D_t of the hidden states.
        layer_map: list of (student hidden-state index, teacher hidden-state index).
    """

    def __init__(self, student_dim: int, teacher_dim: int, layer_map: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise ValueError(f"dims must be >= 1, got student_dim={student_dim}, teacher_dim={teacher_dim}")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.layer_map = _check_layer_map(layer_map)
        self.projections = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in self.layer_map)
        with torch.no_grad():
            for projection in self.projections:
                projection.weight.copy_(torch.eye(teacher_dim, student_dim))
                projection.bias.zero_()

    def forward(
        self,
        student_hidden: Sequence[torch.Tensor],
        teacher_hidden: Sequence[torch.Tensor],
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (scalar) and the per-pair losses {"i->j": scalar}.

        Args:
            student_hidden: sequence of `(B, T, D_s)` (e.g. the student encoder's hidden_states).
            teacher_hidden: sequence of `(B, T, D_t)`, same B and T.
            lengths: `(B,)` valid frames per utterance (the encoder's out_lengths); None = all valid.
        """
        per_layer = {}
        for (i, j), projection in zip(self.layer_map, self.projections):
            if i >= len(student_hidden) or j >= len(teacher_hidden):
                raise ValueError(
                    f"layer_map pair ({i}, {j}) is out of range: got {len(student_hidden)} student and "
                    f"{len(teacher_hidden)} teacher hidden states"
                )
            student, teacher = student_hidden[i], teacher_hidden[j].detach()
            if student.shape[:2] != teacher.shape[:2]:
                raise ValueError(
                    f"pair ({i}, {j}): student (B, T) = {tuple(student.shape[:2])} differs from "
                    f"teacher (B, T) = {tuple(teacher.shape[:2])}"
                )
            mask = (
                torch.ones(student.shape[:2], dtype=torch.bool, device=student.device)
                if lengths is None
                else length_mask(lengths.to(student.device), student.shape[1])
            )
            valid = mask.sum()
            if int(valid) == 0:
                raise ValueError("no valid frames: every length is 0")
            predicted = projection(student)
            weights = mask.to(predicted.dtype)
            l1 = ((predicted - teacher).abs().sum(-1) * weights).sum() / (valid * self.teacher_dim)
            cos = (F.cosine_similarity(predicted, teacher, dim=-1) * weights).sum() / valid
            per_layer[f"{i}->{j}"] = l1 + (1.0 - cos)
        total = torch.stack(list(per_layer.values())).mean()
        return total, per_layer


def output_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over classes, averaged over valid positions.

    Args:
        student_logits, teacher_logits: `(..., V)` with the same shape, e.g. `(B, T, V)` for
            frame-level outputs or `(B, T, U, V)` for RNN-T joint outputs; the last dim is classes.
        temperature: T > 0.
        mask: bool `(...)` = logits.shape[:-1], True at valid positions (see `length_mask`);
            None = all valid. The teacher logits are detached.
    Returns: scalar ≥ 0; 0 iff the two distributions agree at every valid position.
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)
    if mask is None:
        mean = kl.mean()
    else:
        if mask.shape != kl.shape:
            raise ValueError(f"mask must have shape logits.shape[:-1] = {tuple(kl.shape)}, got {tuple(mask.shape)}")
        valid = mask.sum()
        if int(valid) == 0:
            raise ValueError("mask has no valid position")
        mean = (kl * mask.to(kl.dtype)).sum() / valid
    return temperature**2 * mean


@dataclass
class DistillationConfig(JsonConfig):
    """Weights of the two KD terms, the KL temperature, and the layer map.

    total KD loss = layer_weight · LayerDistillation + output_weight · output_kl. A weight of 0
    switches that term off. `layer_map` is a list of (student, teacher) hidden-state indices;
    empty (the default) means "map every student block evenly": `uniform_layer_map(student
    depth, teacher depth)`, which only the caller knowing both models can build.
    """

    layer_weight: float = 1.0
    output_weight: float = 0.0
    temperature: float = 1.0
    layer_map: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layer_weight < 0 or self.output_weight < 0:
            raise ValueError(
                f"weights must be >= 0, got layer_weight={self.layer_weight}, output_weight={self.output_weight}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.layer_map:
            self.layer_map = _check_layer_map(self.layer_map)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "layer_map": [list(pair) for pair in self.layer_map]}

    @classmethod
    def from_dict(cls, data: dict) -> DistillationConfig:
        return super().from_dict({**data, "layer_map": [tuple(pair) for pair in data.get("layer_map", [])]})
