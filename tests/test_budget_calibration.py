"""Budget calibration: one shift of every gate's log α puts the materialised encoder on its
parameter budget, keeps the gates' ranking, and the materialised model has the count it reports."""

from __future__ import annotations

import pytest
import torch

from kdlab.compress.budget_calibration import calibrate_to_budget
from kdlab.compress.factorise import factorise_encoder
from kdlab.compress.materialise import materialise
from kdlab.compress.structures import GateSet, L0Config, attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config

torch.set_num_threads(1)


def gated_encoder(seed: int, low: float, high: float, factorised: bool = False) -> tuple[ConformerEncoder, GateSet]:
    """The default-size architecture with 20-dim features (so the front-end is a small part of
    it), gates with log α uniform in [low, high)."""
    torch.manual_seed(seed)
    encoder = ConformerEncoder(
        teacher_config(
            "small",
            input_dim=20,
            d_model=96,
            num_layers=4,
            ffn_dim=384,
            conv_channels=96,
            num_heads=4,
            head_dim=24,
            dropout=0.0,
        )
    ).eval()
    if factorised:
        factorise_encoder(encoder, energy=0.95)
    gates = attach_gates(encoder, L0Config(seed=seed))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates.gates.values():
            gate.log_alpha.copy_(torch.empty(gate.n).uniform_(low, high, generator=generator))
    return encoder, gates


@pytest.mark.parametrize("low, high, factorised", [(-6.0, 2.0, False), (-1.0, 6.0, False), (-4.0, 4.0, True)])
def test_calibration_lands_on_the_budget_and_the_materialised_model_has_that_count(low, high, factorised):
    encoder, gates = gated_encoder(0, low, high, factorised)
    full = sum(p.numel() for n, p in encoder.named_parameters() if "log_alpha" not in n)
    budget = 0.5 * full
    result = calibrate_to_budget(encoder, gates, budget)
    assert abs(result["params_after"] - budget) / budget < 0.01
    assert abs(result["params_before"] - budget) / budget > 0.05  # the random gates were far from it
    assert materialise(encoder).num_parameters() == round(result["params_after"])


def test_one_shift_keeps_the_ranking_of_the_units():
    encoder, gates = gated_encoder(1, -5.0, 3.0)
    before = {name: gate.log_alpha.detach().clone() for name, gate in gates.gates.items()}
    result = calibrate_to_budget(encoder, gates, 0.4 * sum(p.numel() for p in encoder.parameters()))
    for name, gate in gates.gates.items():
        torch.testing.assert_close(gate.log_alpha.detach(), before[name] + result["shift"])
    # a unit is kept exactly when its shifted log α is above one common threshold
    kept = torch.cat([(gate.deterministic_mask() > 0).flatten() for gate in gates.gates.values()])
    alphas = torch.cat([before[name].flatten() for name in gates.gates])
    assert alphas[kept].min() > alphas[~kept].max()


def test_an_encoder_already_on_budget_moves_little_and_no_gates_is_an_error():
    encoder, gates = gated_encoder(2, -3.0, 3.0)
    first = calibrate_to_budget(encoder, gates, 0.6 * sum(p.numel() for p in encoder.parameters()))
    again = calibrate_to_budget(encoder, gates, first["params_after"])
    assert abs(again["shift"]) < 0.05 and again["params_after"] == first["params_after"]
    with pytest.raises(ValueError, match="gated encoder"):
        calibrate_to_budget(encoder, GateSet({}, {}), 1000)
