"""Distillation losses: layer L1 + (1 − cos) with padding masks, output KL with temperature."""

import json

import pytest
import torch
import torch.nn.functional as F

from kdlab.compress.kd_losses import (
    DistillationConfig,
    LayerDistillation,
    length_mask,
    output_kl,
    uniform_layer_map,
)


def hidden_states(num: int, batch: int, frames: int, dim: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, dim, generator=generator) for _ in range(num)]


def test_length_mask():
    assert length_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]
    with pytest.raises(ValueError, match="exceeds the padded size"):
        length_mask(torch.tensor([4]), 3)


def test_identical_states_with_identity_projection_give_zero_loss():
    states = hidden_states(3, 2, 5, 8, seed=0)
    kd = LayerDistillation(8, 8, [(1, 1), (2, 2)])
    assert torch.equal(kd.projections[0].weight, torch.eye(8))
    total, per_layer = kd(states, states)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert set(per_layer) == {"1->1", "2->2"}


def test_loss_matches_manual_l1_plus_one_minus_cos():
    student, teacher = hidden_states(2, 2, 4, 6, seed=1), hidden_states(3, 2, 4, 6, seed=2)
    kd = LayerDistillation(6, 6, [(0, 2), (1, 1)])
    total, per_layer = kd(student, teacher)
    manual = {}
    for i, j in [(0, 2), (1, 1)]:
        s, t = student[i], teacher[j]
        manual[f"{i}->{j}"] = (s - t).abs().mean() + 1 - F.cosine_similarity(s, t, dim=-1).mean()
    for key, value in manual.items():
        assert per_layer[key].item() == pytest.approx(float(value), rel=1e-5)
    assert total.item() == pytest.approx(float(sum(manual.values()) / 2), rel=1e-5)
    assert total.item() > 0


def test_padding_frames_do_not_count():
    student, teacher = hidden_states(2, 2, 6, 4, seed=3), hidden_states(2, 2, 6, 4, seed=4)
    lengths = torch.tensor([6, 3])
    kd = LayerDistillation(4, 4, [(1, 1)])
    total, _ = kd(student, teacher, lengths)
    garbage = [s.clone() for s in student]
    garbage[1][1, 3:] = 1000.0  # padding of utterance 1
    total_garbage, _ = kd(garbage, teacher, lengths)
    assert total_garbage.item() == pytest.approx(total.item(), rel=1e-6)
    # the masked mean equals the loss on the valid frames only
    valid_s = torch.cat([student[1][0], student[1][1, :3]])
    valid_t = torch.cat([teacher[1][0], teacher[1][1, :3]])
    manual = (valid_s - valid_t).abs().mean() + 1 - F.cosine_similarity(valid_s, valid_t, dim=-1).mean()
    assert total.item() == pytest.approx(float(manual), rel=1e-5)
    # without the lengths the garbage counts
    assert kd(garbage, teacher)[0].item() > total.item() + 1


def test_rectangular_identity_projection_when_widths_differ():
    kd = LayerDistillation(4, 6, [(1, 1)])
    assert torch.equal(kd.projections[0].weight, torch.eye(6, 4))
    student = hidden_states(2, 1, 3, 4, seed=5)
    teacher = [F.pad(s, (0, 2)) for s in student]  # teacher = student in its first 4 dims, zeros after
    total, _ = kd(student, teacher)
    assert total.item() == pytest.approx(0.0, abs=1e-6)


def test_projections_learn_and_teacher_gets_no_gradient():
    student = [s.requires_grad_() for s in hidden_states(2, 2, 3, 4, seed=6)]
    teacher = [t.requires_grad_() for t in hidden_states(2, 2, 3, 4, seed=7)]
    kd = LayerDistillation(4, 4, [(1, 1)])
    kd(student, teacher)[0].backward()
    assert kd.projections[0].weight.grad.abs().sum() > 0 and student[1].grad.abs().sum() > 0
    assert teacher[1].grad is None


def test_bad_layer_maps_are_explained():
    with pytest.raises(ValueError, match="layer_map is empty"):
        LayerDistillation(4, 4, [])
    kd = LayerDistillation(4, 4, [(3, 1)])
    with pytest.raises(ValueError, match=r"pair \(3, 1\) is out of range"):
        kd(hidden_states(2, 1, 2, 4, seed=0), hidden_states(2, 1, 2, 4, seed=0))


def test_uniform_layer_map():
    assert uniform_layer_map(4, 12) == [(1, 3), (2, 6), (3, 9), (4, 12)]
    assert uniform_layer_map(3, 4) == [(1, 1), (2, 3), (3, 4)]
    assert uniform_layer_map(2, 2) == [(1, 1), (2, 2)]


def manual_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-position T² Σ p_t (log p_t − log p_s), written out by hand."""
    p_t = torch.softmax(teacher / temperature, -1)
    return temperature**2 * (p_t * (p_t.log() - torch.softmax(student / temperature, -1).log())).sum(-1)


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 4, 3, 7)])
def test_kl_zero_for_equal_positive_otherwise_and_matches_manual(shape):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64)
    student = torch.randn(shape, generator=generator, dtype=torch.float64)
    assert float(output_kl(teacher.clone(), teacher, temperature=2.0)) == pytest.approx(0.0, abs=1e-12)
    value = output_kl(student, teacher, temperature=2.0)
    assert float(value) > 0
    assert float(value) == pytest.approx(float(manual_kl(student, teacher, 2.0).mean()), rel=1e-10)


def test_kl_mask_averages_over_valid_positions_only():
    generator = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(2, 4, 3, 5, generator=generator), torch.randn(2, 4, 3, 5, generator=generator)
    frame_lengths, token_lengths = torch.tensor([4, 2]), torch.tensor([2, 1])
    mask = length_mask(frame_lengths, 4)[:, :, None] & length_mask(token_lengths + 1, 3)[:, None, :]
    value = output_kl(student, teacher, 1.0, mask)
    assert float(value) == pytest.approx(float(manual_kl(student, teacher, 1.0)[mask].mean()), rel=1e-5)
    garbage = student.clone()
    garbage[~mask] = 50.0
    assert float(output_kl(garbage, teacher, 1.0, mask)) == pytest.approx(float(value), rel=1e-6)
    with pytest.raises(ValueError, match="mask must have shape"):
        output_kl(student, teacher, 1.0, mask[:, :, 0])


def test_kl_temperature_scaling_tends_to_half_variance_of_logit_difference():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(3, 10, generator=generator, dtype=torch.float64)
    student = torch.randn(3, 10, generator=generator, dtype=torch.float64)
    limit = 0.5 * (teacher - student).var(dim=-1, unbiased=False).mean()
    values = [float(output_kl(student, teacher, t)) for t in (1.0, 10.0, 1000.0)]
    assert values[2] == pytest.approx(float(limit), rel=1e-3)
    assert abs(values[1] - float(limit)) < abs(values[0] - float(limit))
    # without the T² factor the KL itself vanishes like 1/T²
    assert values[2] / 1000.0**2 < 1e-5


def test_distillation_config_round_trips_and_validates():
    config = DistillationConfig(layer_weight=1.0, output_weight=0.5, temperature=2.0, layer_map=[(2, 4), (4, 8)])
    restored = DistillationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.layer_map == [(2, 4), (4, 8)]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationConfig(temperature=0.0)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        DistillationConfig(output_weight=-1.0)
