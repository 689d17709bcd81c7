"""The joint route's trainable student and its loss (RNN-T + CTC + KD + Lagrangian), one training step.

    student = build_joint_student(config, ssl_encoder)      # JointStudent: asr (fresh heads) + distill + ctc_head
    loss_fn = JointLoss(config, kd_teacher, params0, controller)   # controller None: no sparsity term
    loss, parts = loss_fn(student, batch)                   # parts: loss_rnnt, loss_ctc, loss_distill, ...

With enc_S, h_S = the student encoder's output and hidden states, z_S (B, T', U+1, V) its joiner
outputs, N = the batch's tokens, and h_T, z_T those of the KD teacher (eval mode, no gradient;
the SSL encoder in its own offline mode, or the fine-tuned teacher of the run's mode):

    loss = RNN-T(z_S) / N                                                 "loss_rnnt"      (per token)
         (with rnnt.prune_range > 0: pruned + scale · simple, per token;  "loss_simple" beside)
         + ctc_weight    · CTC(head(enc_S)) / N                           "loss_ctc"       (with a CTC head)
         + layer_weight  · mean_pairs [L1 + (1 − cos)](P h_S, h_T)        "loss_distill"   (kd methods)
         + output_weight · T² KL(softmax(z_T/T) ‖ softmax(z_S/T))          "loss_output_kl" (KD from the
                                                                          fine-tuned teacher only)
         + λ1 (ŝ − t) + λ2 (ŝ − t)²                                       "loss_penalty"   (gated methods)

The KL needs the full logits z_S: with output KD they are computed, and the task loss stays the
one ``rnnt.prune_range`` chooses (the pruned loss does not reuse them), so every row trains on the
same task loss. The KL is averaged over the valid lattice points (t < T'_b, u ≤ U_b) only; the layer KD is a mean
over valid frames. Per token, RNN-T and CTC are of order one like the KD terms (a per-utterance
sum is tens of nats and would drown them), so the KD weights mean what they say.
ŝ = 1 − E[params] / params₀ with params₀ the dense SSL encoder's count.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from kdlab.compress.kd_losses import LayerDistillation, length_mask, output_kl, uniform_layer_map
from kdlab.compress.lagrangian import SparsityController, expected_sparsity
from kdlab.compress.param_count import expected_params
from kdlab.compress.structures import GateSet
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel
from kdlab.train.recipes.compress_student import build_student
from kdlab.train.recipes.ctc_warmup import ctc_loss
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.student_start import fresh_rnnt


class JointStudent(nn.Module):
    """What the trainer optimises: the student RNN-T model, (layer KD only) the KD projections and
    (CTC beside the transducer) the CTC head of the warm-start."""

    def __init__(self, asr: RNNTModel, distill: LayerDistillation | None, ctc_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.asr = asr
        self.distill = distill
        self.ctc_head = ctc_head


def with_mode(encoder: ConformerEncoder, config: JointConfig) -> ConformerEncoder:
    """A copy of ``encoder`` in the run's mode (``streaming``, ``chunk_size``, ``left_chunks``): the
    weights do not depend on the mode, only the attention mask and the convolution padding do."""
    moved = ConformerEncoder(
        replace(
            encoder.config, streaming=config.streaming, chunk_size=config.chunk_size, left_chunks=config.left_chunks
        )
    )
    moved.load_state_dict(encoder.state_dict())
    return moved.to(next(encoder.parameters()).device).train(encoder.training)


def joint_layer_map(config: JointConfig, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state pairs of the layer KD; empty when the run has no layer KD."""
    if not config.uses_kd() or config.distill.layer_weight == 0:
        return []
    return list(config.distill.layer_map) or uniform_layer_map(student_layers, teacher_layers)


def build_joint_student(
    config: JointConfig, ssl_encoder: ConformerEncoder, kd_encoder: ConformerEncoder | None = None
) -> tuple[JointStudent, GateSet, dict]:
    """(student, its gates, what was built) for ``config.method``, in training mode on the SSL
    encoder's device: the encoder from ``build_student`` (on the SSL encoder in the run's mode),
    predictor and joiner fresh from ``config.seed`` (``fresh_rnnt``), KD projections (towards
    ``kd_encoder``'s width, default the SSL encoder's) identity-initialised."""
    built = build_student(config, with_mode(ssl_encoder, config))
    asr = fresh_rnnt(built.encoder, config.rnnt, config.seed)
    kd_encoder = ssl_encoder if kd_encoder is None else kd_encoder
    pairs = joint_layer_map(config, built.encoder.config.num_layers, kd_encoder.config.num_layers)
    distill = LayerDistillation(built.encoder.config.d_model, kd_encoder.config.d_model, pairs) if pairs else None
    device = next(ssl_encoder.parameters()).device
    info = {**built.info, "layer_map": [list(p) for p in pairs]}
    return JointStudent(asr, distill).to(device).train(), built.gates, info


def lattice_mask(enc_lengths: torch.Tensor, token_lengths: torch.Tensor, frames: int, labels: int) -> torch.Tensor:
    """Bool (B, frames, labels): True at the valid RNN-T lattice points t < T'_b, u ≤ U_b."""
    return length_mask(enc_lengths, frames)[:, :, None] & length_mask(token_lengths + 1, labels)[:, None, :]


class JointLoss:
    """``loss_fn(student, batch) -> (loss, parts)`` of one joint / recovery step (module docstring).

    Args:
        config: weights (``distill``, ``ctc_warmup.aux_weight``) and whether the method distils.
        kd_teacher: the KD source (eval, no grad, on the student's device): the SSL encoder (layer
            KD) or the fine-tuned RNN-T teacher (layer and output KD); None only without KD.
        reference_params: params₀ of ŝ (the dense SSL encoder's count).
        controller: the Lagrangian (gated methods), else None.
        step: () -> the trainer's current step (for the target ramp).
        kd: False switches the KD terms off even for a kd method (recovery without KD).
    """

    def __init__(
        self,
        config: JointConfig,
        kd_teacher: ConformerEncoder | RNNTModel | None,
        reference_params: int,
        controller: SparsityController | None = None,
        step=lambda: 0,
        kd: bool = True,
    ) -> None:
        self.controller, self.step, self.reference_params = controller, step, reference_params
        distils = kd and config.uses_kd()
        if distils and kd_teacher is None:
            raise ValueError(f"method {config.method!r} distils: give JointLoss its KD teacher")
        self.teacher_model = kd_teacher if isinstance(kd_teacher, RNNTModel) else None
        self.teacher_encoder = kd_teacher.encoder if isinstance(kd_teacher, RNNTModel) else kd_teacher
        self.layer_weight = config.distill.layer_weight if distils else 0.0
        self.output_weight = config.distill.output_weight if distils and self.teacher_model is not None else 0.0
        self.temperature = config.distill.temperature
        self.ctc_weight = config.ctc_warmup.aux_weight

    def __call__(self, model: JointStudent, batch) -> tuple[torch.Tensor, dict]:
        features, lengths, tokens, token_lengths = (
            batch.features,
            batch.feature_lengths,
            batch.tokens,
            batch.token_lengths,
        )
        per_token = len(token_lengths) / token_lengths.sum().clamp(min=1)  # utterance mean -> token mean
        enc, enc_lengths, hidden = model.asr.encoder(features, lengths)
        logits = model.asr.logits(enc, enc_lengths, tokens, token_lengths) if self.output_weight else None
        rnnt, rnnt_parts = model.asr.transducer_loss(enc, enc_lengths, tokens, token_lengths, logits)
        rnnt = rnnt * per_token
        loss, parts = rnnt, {"loss_rnnt": rnnt.detach(), **{k: v * per_token for k, v in rnnt_parts.items()}}
        if self.ctc_weight and model.ctc_head is not None:
            log_probs = torch.log_softmax(model.ctc_head(enc), dim=-1)
            ctc = ctc_loss(log_probs, enc_lengths, tokens, token_lengths) * per_token
            loss, parts["loss_ctc"] = loss + self.ctc_weight * ctc, ctc.detach()
        if self.layer_weight or self.output_weight:
            with torch.no_grad():
                teacher_enc, teacher_lengths, teacher_hidden = self.teacher_encoder(features, lengths)
            if self.layer_weight and model.distill is not None:
                distill, _ = model.distill(hidden, teacher_hidden, enc_lengths)
                loss, parts["loss_distill"] = loss + self.layer_weight * distill, distill.detach()
            if self.output_weight:
                with torch.no_grad():
                    teacher_logits = self.teacher_model.logits(teacher_enc, teacher_lengths, tokens, token_lengths)
                mask = lattice_mask(enc_lengths, token_lengths, logits.shape[1], logits.shape[2])
                kl = output_kl(logits, teacher_logits, self.temperature, mask)
                loss, parts["loss_output_kl"] = loss + self.output_weight * kl, kl.detach()
        if self.controller is not None:
            s_hat = expected_sparsity(expected_params(model.asr.encoder), self.reference_params)
            penalty = self.controller.penalty(s_hat, self.step()).to(loss.dtype)
            loss, parts["loss_penalty"] = loss + penalty, penalty.detach()
        return loss, parts
