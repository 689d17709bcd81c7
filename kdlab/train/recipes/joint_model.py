"""The joint route's trainable student and its loss (RNN-T + KD + Lagrangian), one training step.

    student = build_joint_student(config, teacher)          # JointStudent: asr (RNNTModel) + distill
    loss_fn = JointLoss(config, teacher, controller)        # controller None: no sparsity term
    loss, parts = loss_fn(student, batch)                   # parts: loss_rnnt, loss_distill, ...

With enc_S, h_S = the student encoder's output and hidden states, z_S (B, T', U+1, V) its joiner
outputs, and the same for the teacher (eval mode, no gradient, in its own offline / streaming mode):

    loss = RNN-T(z_S)                                                     "loss_rnnt"
         + layer_weight  · mean_pairs [L1 + (1 − cos)](P h_S, h_T)        "loss_distill"    (kd methods)
         + output_weight · T² KL(softmax(z_T/T) ‖ softmax(z_S/T))          "loss_output_kl"  (kd methods)
         + λ1 (ŝ − t) + λ2 (ŝ − t)²                                       "loss_penalty"    (gated methods)

The KL is averaged over the valid lattice points (t < T'_b, u ≤ U_b) only. ŝ = 1 − E[params] /
params₀ with params₀ the dense teacher encoder's count. The RNN-T loss is the teacher's (mean over
utterances of −log P(y|x)), so the KD weights are relative to a per-utterance sum: an utterance's
RNN-T loss is tens of nats while the KD terms are per-position means of order one.
"""

from __future__ import annotations

import copy
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
from kdlab.train.recipes.joint_config import JointConfig


class JointStudent(nn.Module):
    """What the trainer optimises: the student RNN-T model and (layer KD only) the KD projections."""

    def __init__(self, asr: RNNTModel, distill: LayerDistillation | None) -> None:
        super().__init__()
        self.asr = asr
        self.distill = distill


def with_mode(encoder: ConformerEncoder, config: JointConfig) -> ConformerEncoder:
    """A copy of ``encoder`` in the run's mode (``streaming``, ``chunk_size``, ``left_chunks``): the
    weights do not depend on the mode, only the attention mask and the convolution padding do."""
    moved = ConformerEncoder(replace(encoder.config, streaming=config.streaming, chunk_size=config.chunk_size,
                                     left_chunks=config.left_chunks))
    moved.load_state_dict(encoder.state_dict())
    return moved.to(next(encoder.parameters()).device).train(encoder.training)


def joint_layer_map(config: JointConfig, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state pairs of the layer KD; empty when the run has no layer KD."""
    if not config.uses_kd() or config.distill.layer_weight == 0:
        return []
    return list(config.distill.layer_map) or uniform_layer_map(student_layers, teacher_layers)


def build_joint_student(config: JointConfig, teacher: RNNTModel) -> tuple[JointStudent, GateSet, dict]:
    """(student, its gates, what was built) for ``config.method``, in training mode on the teacher's
    device: the encoder from ``build_student`` (on the teacher encoder in the run's mode), predictor
    and joiner copied from the teacher, KD projections identity-initialised."""
    built = build_student(config.compress_config(), with_mode(teacher.encoder, config))
    asr = RNNTModel(built.encoder, teacher.config)
    asr.predictor = copy.deepcopy(teacher.predictor)
    asr.joiner = copy.deepcopy(teacher.joiner)
    pairs = joint_layer_map(config, built.encoder.config.num_layers, teacher.encoder.config.num_layers)
    distill = LayerDistillation(built.encoder.config.d_model, teacher.encoder.config.d_model, pairs) if pairs else None
    device = next(teacher.parameters()).device
    info = {**built.info, "layer_map": [list(p) for p in pairs]}
    return JointStudent(asr, distill).to(device).train(), built.gates, info


def lattice_mask(enc_lengths: torch.Tensor, token_lengths: torch.Tensor, frames: int, labels: int) -> torch.Tensor:
    """Bool (B, frames, labels): True at the valid RNN-T lattice points t < T'_b, u ≤ U_b."""
    return length_mask(enc_lengths, frames)[:, :, None] & length_mask(token_lengths + 1, labels)[:, None, :]


class JointLoss:
    """``loss_fn(student, batch) -> (loss, parts)`` of one joint / recovery step (module docstring).

    Args:
        config: weights (``distill``) and whether the method distils (``uses_kd()``).
        teacher: the fine-tuned teacher (eval, no grad, on the student's device).
        controller: the Lagrangian (gated methods), else None.
        step: () -> the trainer's current step (for the target ramp).
        kd: False switches the KD terms off even for a kd method (recovery without KD).
    """

    def __init__(self, config: JointConfig, teacher: RNNTModel, controller: SparsityController | None = None,
                 step=lambda: 0, kd: bool = True) -> None:
        self.teacher, self.controller, self.step = teacher, controller, step
        distils = kd and config.uses_kd()
        self.layer_weight = config.distill.layer_weight if distils else 0.0
        self.output_weight = config.distill.output_weight if distils else 0.0
        self.temperature = config.distill.temperature
        self.teacher_params = teacher.encoder.num_parameters()

    def __call__(self, model: JointStudent, batch) -> tuple[torch.Tensor, dict]:
        features, lengths, tokens, token_lengths = (batch.features, batch.feature_lengths, batch.tokens,
                                                    batch.token_lengths)
        enc, enc_lengths, hidden = model.asr.encoder(features, lengths)
        logits = model.asr.logits(enc, enc_lengths, tokens, token_lengths)
        rnnt = model.asr.loss(logits, enc_lengths, tokens, token_lengths)
        loss, parts = rnnt, {"loss_rnnt": rnnt.detach()}
        if self.layer_weight or self.output_weight:
            with torch.no_grad():
                teacher_enc, teacher_lengths, teacher_hidden = self.teacher.encoder(features, lengths)
            if self.layer_weight and model.distill is not None:
                distill, _ = model.distill(hidden, teacher_hidden, enc_lengths)
                loss, parts["loss_distill"] = loss + self.layer_weight * distill, distill.detach()
            if self.output_weight:
                with torch.no_grad():
                    teacher_logits = self.teacher.logits(teacher_enc, teacher_lengths, tokens, token_lengths)
                mask = lattice_mask(enc_lengths, token_lengths, logits.shape[1], logits.shape[2])
                kl = output_kl(logits, teacher_logits, self.temperature, mask)
                loss, parts["loss_output_kl"] = loss + self.output_weight * kl, kl.detach()
        if self.controller is not None:
            s_hat = expected_sparsity(expected_params(model.asr.encoder), self.teacher_params)
            penalty = self.controller.penalty(s_hat, self.step()).to(loss.dtype)
            loss, parts["loss_penalty"] = loss + penalty, penalty.detach()
        return loss, parts
