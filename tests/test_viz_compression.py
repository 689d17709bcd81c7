"""Compression figures and panels show exactly the data they are given or measure (acceptance 7)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.compress.hardconcrete import hard_concrete_prob_nonzero, hard_concrete_prob_one
from kdlab.compress.lowrank import LowRankLinear, break_even_rank, rank_by_energy, reconstruction_error
from kdlab.compress.materialise import materialise
from kdlab.compress.param_count import expected_macs_per_second
from kdlab.compress.sparsity_selection import SparsitySelector
from kdlab.compress.structures import GateSet, attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.train.history import History
from kdlab.viz import curve_figures as cf
from kdlab.viz import gate_figures as gf
from kdlab.viz import hardconcrete_figure as hf
from kdlab.viz import rank_figures as rf
from kdlab.viz.compression_history import as_records
from kdlab.viz.compression_panels import HardConcretePanel, RankPanel, SparsityPanel

BRANCHES = ("ffn1", "attn", "conv", "ffn2")
#: A short input for the panels' latency measurement (keeps the tests fast).
SHORT_BATCH = (torch.randn(1, 40, 80, generator=torch.Generator().manual_seed(9)), torch.tensor([40]))


def _gated_encoder(seed: int = 0) -> ConformerEncoder:
    """Tiny encoder (eval mode) with every gate at a random state: some units closed, some soft."""
    torch.manual_seed(seed)
    encoder = ConformerEncoder(teacher_config("tiny")).eval()
    generator = torch.Generator().manual_seed(seed)
    for gate in attach_gates(encoder).gates.values():
        gate.log_alpha.data = torch.randn(gate.n, generator=generator) * 3 + 1
    return encoder


@pytest.fixture(scope="module")
def encoder():
    return _gated_encoder()


@pytest.fixture(scope="module")
def history(encoder):
    """Trainer-like records: gate probabilities drifting over 4 steps, ranks, losses, λ, and noise
    the builders must ignore (a record without step, None / NaN values, an eval record)."""
    gates = GateSet.from_encoder(copy.deepcopy(encoder))
    generator = torch.Generator().manual_seed(1)
    records = []
    for step in (10, 20, 30, 40):
        for gate in gates.gates.values():
            gate.log_alpha.data -= torch.rand(gate.n, generator=generator)
        ranks = {"blocks.0.attn.q_proj": 32.0 - step / 10, "blocks.1.ffn1.linear1": 30.0 - step / 5}
        if step == 30:
            del ranks["blocks.1.ffn1.linear1"]
        records.append(
            {
                "kind": "train",
                "step": step,
                "loss": 3.0 / step,
                "loss_kd": 1.0 / step,
                "target_sparsity": step / 100,
                "expected_sparsity": None if step == 20 else step / 110,
                "lambda1": step / 7,
                "lambda2": step / 70,
                "lr": 1e-3,
            }
        )
        records.append(
            {
                "kind": "record",
                "step": step,
                "ranks": ranks,
                "gates": {k: v.tolist() for k, v in gates.probabilities().items()},
            }
        )
    records.append({"kind": "eval", "step": 40, "loss": 0.5, "wer": 0.3})
    records.append({"kind": "train", "loss": 1.0})  # no step: ignored
    return records


def _gate_records(history):
    return [r for r in history if "gates" in r]


# ---- gate heatmaps -------------------------------------------------------------------------------


def test_gate_structures_are_found_in_block_order(history):
    assert gf.gate_structures(history) == ["attn", "ffn1", "conv", "ffn2", "branches"]


@pytest.mark.parametrize("structure", ["attn", "ffn1", "conv", "ffn2"])
def test_heatmap_frames_equal_the_recorded_gate_history(history, structure):
    records = _gate_records(history)
    figure = gf.gate_heatmap_figure(history, structure)
    assert [f.name for f in figure.frames] == [str(r["step"]) for r in records]
    assert [s.label for s in figure.layout.sliders[0].steps] == [str(r["step"]) for r in records]
    assert figure.layout.sliders[0].active == len(records) - 1
    for frame, record in zip(figure.frames, records):
        z = np.asarray(frame.data[0].z)
        assert z.shape[0] == 2
        for layer in range(2):
            assert np.array_equal(z[layer], record["gates"][f"blocks.{layer}.{structure}"])
    assert np.array_equal(np.asarray(figure.data[0].z), np.asarray(figure.frames[-1].data[0].z))
    assert list(figure.data[0].y) == ["layer 0", "layer 1"]


def test_branch_heatmap_has_one_column_per_residual_branch(history):
    figure = gf.gate_heatmap_figure(history, "branches")
    assert list(figure.data[0].x) == list(BRANCHES)
    for frame, record in zip(figure.frames, _gate_records(history)):
        for layer in range(2):
            expected = [record["gates"][f"blocks.{layer}.{b}_gate"][0] for b in BRANCHES]
            assert np.array_equal(np.asarray(frame.data[0].z)[layer], expected)


def test_heatmap_pads_short_rows_and_accepts_bare_numbers_and_names_outside_blocks():
    records = [
        {
            "step": 1,
            "gates": {
                "blocks.0.ffn1": [0.1, 0.2, 0.3],
                "blocks.2.ffn1": [0.5],
                "blocks.2.attn_gate": 0.7,
                "subsampling.linear": [0.9, 0.8],
            },
        }
    ]
    z = np.asarray(gf.gate_heatmap_figure(records, "ffn1").data[0].z, dtype=float)
    assert np.array_equal(z[0], [0.1, 0.2, 0.3])
    assert z[1, 0] == 0.5 and np.isnan(z[1, 1:]).all()
    branches = gf.gate_heatmap_figure(records, "branches").data[0]
    assert list(branches.y) == ["layer 2"] and np.asarray(branches.z, dtype=float)[0, 1] == 0.7
    outside = gf.gate_heatmap_figure(records, "subsampling.linear").data[0]
    assert list(outside.y) == ["-"] and np.array_equal(np.asarray(outside.z)[0], [0.9, 0.8])


def test_heatmap_errors_say_what_is_missing(history):
    with pytest.raises(ValueError, match="no 'gates' records"):
        gf.gate_heatmap_figure([{"step": 1, "loss": 2.0}], "ffn1")
    with pytest.raises(ValueError, match=r"no gate of structure 'mlp'.*'ffn1'"):
        gf.gate_heatmap_figure(history, "mlp")


# ---- remaining ratios -----------------------------------------------------------------------------


def _sizes_from_config(encoder, layer):
    dims = encoder.config.block_dims(layer)
    return [dims.num_heads, dims.ffn1_dim, dims.conv_channels, dims.ffn2_dim]


def test_remaining_ratios_equal_the_materialised_models_real_sizes(encoder):
    pruned = copy.deepcopy(encoder)
    pruned.blocks[1].conv_gate.log_alpha.data.fill_(-30.0)  # drop a whole branch
    compressed = materialise(pruned)
    assert compressed.blocks[1].conv is None
    figure = gf.remaining_ratio_figure(encoder, compressed)
    assert [t.name for t in figure.data] == ["heads", "FFN1 units", "conv channels", "FFN2 units", "parameters"]
    for layer in range(2):
        kept, full = _sizes_from_config(compressed, layer), _sizes_from_config(encoder, layer)
        for trace, k, f in zip(figure.data[:4], kept, full):
            assert trace.y[layer] == k / f
        real = sum(p.numel() for p in compressed.blocks[layer].parameters())
        dense = sum(p.numel() for n, p in encoder.blocks[layer].named_parameters() if "gate" not in n)
        assert figure.data[4].y[layer] == real / dense
    assert figure.data[2].y[1] == 0.0
    assert f"{compressed.num_parameters() / encoder.num_parameters():.1%}" in figure.layout.title.text


# ---- ranks and spectra ----------------------------------------------------------------------------


def test_rank_lines_equal_the_recorded_ranks_with_gaps_where_missing(history):
    figure = rf.rank_history_figure(history)
    records = [r for r in history if "ranks" in r]
    assert [t.name for t in figure.data] == ["blocks.0.attn.q_proj", "blocks.1.ffn1.linear1"]
    for trace in figure.data:
        mine = [r for r in records if trace.name in r["ranks"]]
        assert list(trace.x) == [r["step"] for r in mine]
        assert list(trace.y) == [r["ranks"][trace.name] for r in mine]
    assert 30 not in figure.data[1].x
    assert [t.name for t in rf.rank_history_figure(history, names=["blocks.1.ffn1.linear1"]).data] == [
        "blocks.1.ffn1.linear1"
    ]
    with pytest.raises(ValueError, match="no rank recorded for"):
        rf.rank_history_figure(history, names=["nope"])


@pytest.mark.parametrize("shape", [(64, 32), (32, 32), (96, 4)])
def test_spectrum_equals_svdvals_with_energy_and_break_even_markers(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    figure = rf.spectrum_figure(weight, rank=5)
    values = torch.linalg.svdvals(weight.double()).numpy()
    assert np.allclose(figure.data[rf.SPECTRUM].y, values, rtol=1e-12)
    assert list(figure.data[rf.SPECTRUM].x) == list(range(1, min(shape) + 1))
    energy = np.asarray(figure.data[rf.ENERGY].y)
    assert np.allclose(energy, np.cumsum(values**2) / np.sum(values**2))
    chosen = rank_by_energy(torch.from_numpy(values), 0.9)
    assert energy[chosen - 1] >= 0.9 and (chosen == 1 or energy[chosen - 2] < 0.9)
    assert list(figure.data[rf.BREAK_EVEN].x) == [break_even_rank(*shape)] * 2
    assert list(figure.data[rf.CHOSEN].x) == [5, 5] and figure.data[rf.CHOSEN].visible
    assert figure.data[rf.ENERGY].yaxis == "y2"
    assert rf.spectrum_figure(weight).data[rf.CHOSEN].visible is False


# ---- curves ---------------------------------------------------------------------------------------


def test_sparsity_figure_shows_target_achieved_and_lambdas_on_a_second_axis(history):
    figure = cf.sparsity_figure(history)
    traces = {t.name: t for t in figure.data}
    assert list(traces) == ["target_sparsity", "expected_sparsity", "lambda1", "lambda2"]
    for key, trace in traces.items():
        recorded = [r for r in history if "step" in r and isinstance(r.get(key), float)]
        assert list(trace.x) == [r["step"] for r in recorded] and list(trace.y) == [r[key] for r in recorded]
        assert trace.yaxis == ("y2" if key.startswith("lambda") else "y")
    assert 20 not in traces["expected_sparsity"].x  # recorded as None
    partial = cf.sparsity_figure([{"step": 1, "target_sparsity": 0.1}, {"step": 2, "expected_sparsity": 0.05}])
    assert [t.name for t in partial.data] == ["target_sparsity", "expected_sparsity"]
    with pytest.raises(ValueError, match="is it from an L0 run"):
        cf.sparsity_figure([{"step": 1, "loss": 1.0}])


def test_loss_figure_has_one_line_per_loss_part_and_record_kind(history):
    figure = cf.loss_figure(history)
    traces = {t.name: t for t in figure.data}
    assert list(traces) == ["loss (train)", "loss (eval)", "loss_kd"]
    train = [r for r in history if r.get("kind") == "train" and "step" in r]
    assert list(traces["loss (train)"].y) == [r["loss"] for r in train]
    assert list(traces["loss (eval)"].x) == [40] and list(traces["loss (eval)"].y) == [0.5]
    assert list(traces["loss_kd"].y) == [r["loss_kd"] for r in train]
    assert cf.loss_figure(history, keys=["loss_kd"], log_y=True).layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="no record has a numeric 'loss_l0'"):
        cf.loss_figure(history, keys=["loss_l0"])


def test_pareto_figure_labels_each_result_and_draws_the_front():
    results = [
        {"method": "teacher", "params": 5.4e6, "wer": 0.10},
        {"method": "kd+l0", "params": 2.7e6, "wer": 0.11},
        {"method": "kd+lrf", "params": 2.7e6, "wer": 0.13},  # dominated by kd+l0
        {"method": "l0", "params": 1.6e6, "wer": 0.20},
        {"method": "kd+l0", "params": 1.6e6, "wer": 0.15},  # dominates l0
        {"method": "lrf", "params": 2.0e6},  # no WER yet
    ]
    figure = cf.pareto_figure(results)
    traces = {t.name: t for t in figure.data}
    assert list(traces) == ["teacher", "kd+l0", "kd+lrf", "l0", "Pareto front"]
    assert list(traces["kd+l0"].x) == [2.7e6, 1.6e6] and list(traces["kd+l0"].y) == [0.11, 0.15]
    assert list(traces["kd+l0"].text) == ["kd+l0", "kd+l0"]
    assert list(traces["Pareto front"].x) == [1.6e6, 2.7e6, 5.4e6]
    assert list(traces["Pareto front"].y) == [0.15, 0.11, 0.10]
    assert "1 result without params/wer" in figure.layout.title.text
    with pytest.raises(ValueError, match="no result has numeric"):
        cf.pareto_figure([{"method": "x"}])


def test_history_can_be_a_history_object_or_a_json_path(history, tmp_path):
    path = tmp_path / "history.json"
    History([r for r in history if "step" in r]).save(path)
    for source in (History(history), path, str(path)):
        assert as_records(source) == [r for r in history if "step" in r]
    with pytest.raises(ValueError, match="does not exist"):
        as_records(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="list of record dicts"):
        as_records({"step": 1})


# ---- hard concrete -------------------------------------------------------------------------------


@pytest.mark.parametrize("log_alpha,beta", [(0.0, 2 / 3), (2.5, 0.5), (-1.5, 1.2)])
def test_hard_concrete_figure_marks_the_closed_form_beside_the_samples(log_alpha, beta):
    figure = hf.hard_concrete_figure(log_alpha, beta, num_samples=20000, bins=10, seed=1)
    alpha = torch.tensor([log_alpha], dtype=torch.float64)
    prob_zero = 1 - float(hard_concrete_prob_nonzero(alpha, beta, -0.1, 1.1))
    prob_one = float(hard_concrete_prob_one(alpha, beta, -0.1, 1.1))
    atoms = figure.data[hf.CLOSED_ATOMS]
    assert list(atoms.x) == [0.0, 1.0] and np.allclose(atoms.y, [prob_zero, prob_one], rtol=1e-12, atol=1e-15)
    closed, sampled = np.asarray(figure.data[hf.CLOSED_BINS].y), np.asarray(figure.data[hf.SAMPLED_BINS].y)
    assert closed.sum() + prob_zero + prob_one == pytest.approx(1.0, abs=1e-12)
    sampled_atoms = np.asarray(figure.data[hf.SAMPLED_ATOMS].y)
    assert sampled.sum() + sampled_atoms.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(sampled, closed, atol=0.012) and np.allclose(sampled_atoms, [prob_zero, prob_one], atol=0.012)
    with pytest.raises(ValueError, match="num_samples and bins must be >= 1"):
        hf.hard_concrete_figure(0.0, bins=0)


def test_hard_concrete_panel_follows_its_sliders():
    panel = HardConcretePanel(log_alpha=0.0, num_samples=5000, bins=10, seed=2)
    figure = panel.figure
    panel.log_alpha.value = 3.0
    panel.beta.value = 0.4
    assert panel.figure is figure and panel.values.log_alpha == 3.0 and panel.values.beta == 0.4
    expected = hf.hard_concrete_view(3.0, 0.4, num_samples=5000, bins=10, seed=2)
    assert np.array_equal(figure.data[hf.CLOSED_ATOMS].y, [expected.prob_zero, expected.prob_one])
    assert np.array_equal(figure.data[hf.SAMPLED_BINS].y, expected.sampled_bins)
    assert f"closed form {expected.prob_one:.3f}" in panel.status.value
    panel.num_samples = 0  # an unusable setting is reported, not raised
    panel.update()
    assert "ValueError" in panel.status.value and np.array_equal(figure.data[hf.SAMPLED_BINS].y, expected.sampled_bins)


# ---- sparsity panel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparsity_panel(encoder):
    calls = []

    def quick_wer(model):
        calls.append(model.num_parameters())
        return 0.25 + len(calls) / 100

    panel = SparsityPanel(encoder, dev_batch=SHORT_BATCH, quick_wer_fn=quick_wer, sparsity=0.2, latency_min_time_s=0.01)
    panel.wer_calls = calls
    return panel


@pytest.mark.parametrize("sparsity", [0.2, 0.35, 0.45])
def test_sparsity_slider_materialises_a_model_at_that_sparsity(sparsity_panel, sparsity):
    panel = sparsity_panel
    panel.slider.value = sparsity
    model, values = panel.model, panel.values
    dense = panel.selector.dense_params
    real = 1 - model.num_parameters() / dense
    assert values["params"] == model.num_parameters() and f"params {model.num_parameters():,}" in panel.status.value
    assert values["sparsity"] == pytest.approx(real) and values["reached"]
    # the fewest removals that reach the slider: one unit fewer would not
    assert sparsity <= real < sparsity + 0.05
    assert panel.selector.apply(values["removed_units"] - 1) > (1 - sparsity) * dense
    assert values["macs_per_second"] == pytest.approx(float(expected_macs_per_second(model, deterministic=True)))
    assert values["wer"] == pytest.approx(0.25 + len(panel.wer_calls) / 100)
    assert panel.wer_calls[-1] == model.num_parameters() and f"dev WER {values['wer']:.2%}" in panel.status.value
    ratios = gf.remaining_ratios(panel.selector.encoder, model)
    assert [list(t.y)[:-1] for t in panel.figure.data] == list(ratios.values()), "per layer, then the front-end"


def test_sparsity_panel_keeps_the_trained_masks_of_kept_units(sparsity_panel, encoder):
    panel = sparsity_panel
    panel.slider.value = 0.3
    original = GateSet.from_encoder(encoder)
    reference = copy.deepcopy(encoder)
    for name, gate in GateSet.from_encoder(reference).gates.items():
        kept = panel.selector.gates.gates[name].deterministic_mask() > 0
        trained_open = original.gates[name].deterministic_mask() > 0
        assert torch.equal(
            panel.selector.gates.gates[name].log_alpha[kept & trained_open],
            original.gates[name].log_alpha[kept & trained_open],
        )
        gate.log_alpha.data = panel.selector.gates.gates[name].log_alpha.detach().clone()
    features = torch.randn(2, 60, 80, generator=torch.Generator().manual_seed(4))
    lengths = torch.tensor([60, 45])
    assert torch.allclose(panel.model(features, lengths)[0], reference(features, lengths)[0], atol=1e-5)
    untouched = GateSet.from_encoder(_gated_encoder()).gates  # the fixture's construction, repeated
    assert all(torch.equal(gate.log_alpha, untouched[name].log_alpha) for name, gate in original.gates.items())


def test_sparsity_panel_reports_failures_in_its_status_line(encoder):
    def broken_wer(model):
        raise RuntimeError("no dev set loaded")

    panel = SparsityPanel(
        encoder, dev_batch=SHORT_BATCH, quick_wer_fn=broken_wer, sparsity=0.9, latency_min_time_s=0.01
    )
    assert not panel.values["reached"] and "cannot be reached" in panel.status.value
    assert panel.values["wer"] is None and "no dev set loaded" in panel.status.value
    assert f"params {panel.model.num_parameters():,}" in panel.status.value
    model = panel.model
    panel.selector.materialise = lambda sparsity: (_ for _ in ()).throw(ValueError("boom"))
    panel.slider.value = 0.1
    assert "ValueError: boom" in panel.status.value and panel.model is model


def test_scores_rank_the_units_of_an_ungated_encoder():
    torch.manual_seed(0)
    dense = ConformerEncoder(teacher_config("tiny")).eval()
    generator = torch.Generator().manual_seed(5)
    scores = {
        name: torch.rand(gate.n, generator=generator) for name, gate in attach_gates(copy.deepcopy(dense)).gates.items()
    }
    selector = SparsitySelector(dense, scores)
    model, selection = selector.materialise(0.25)
    assert model.num_parameters() == selection.params and selection.sparsity >= 0.25
    removed = {
        (n, i)
        for n, g in selector.gates.gates.items()
        for i in torch.nonzero(g.deterministic_mask() == 0).reshape(-1).tolist()
    }
    flat = sorted((float(v), n, i) for n, s in scores.items() for i, v in enumerate(s))
    assert removed == {(n, i) for _, n, i in flat[: selection.removed_units]}
    assert len(GateSet.from_encoder(dense)) == 0  # the caller's encoder got no gates
    with pytest.raises(ValueError, match="has no gates"):
        SparsitySelector(dense)
    with pytest.raises(ValueError, match="scores must name every gate"):
        SparsitySelector(dense, {"blocks.0.attn": torch.ones(2)})


# ---- rank panel -----------------------------------------------------------------------------------


def test_rank_slider_shows_the_truncated_svd_error_and_params(encoder):
    panel = RankPanel(encoder, "blocks.0.ffn1.linear1")
    weight = encoder.blocks[0].ffn1.linear1.weight.detach()
    m, n = weight.shape
    assert panel.rank.max == min(m, n) and panel.rank.value == break_even_rank(m, n)
    for rank in (1, 7, break_even_rank(m, n) + 1):
        panel.rank.value = rank
        v = panel.values
        assert v["error"] == pytest.approx(reconstruction_error(weight, rank), rel=1e-12)
        assert v["relative_error"] == pytest.approx(v["error"] / float(torch.linalg.matrix_norm(weight.double())))
        assert v["params"] == rank * (m + n) + m and v["dense_params"] == m * n + m
        assert v["saves"] == (rank <= break_even_rank(m, n))
        assert f"{v['error']:.4g}" in panel.status.value and f"params {v['params']:,}" in panel.status.value
        assert list(panel.figure.data[rf.CHOSEN].x) == [rank, rank]
    assert "does NOT save" in panel.status.value
    assert list(panel.figure.data[rf.BREAK_EVEN].x) == [break_even_rank(m, n)] * 2
    panel.matrix.value = "blocks.1.attn.out_proj"
    other = encoder.blocks[1].attn.out_proj.weight.detach()
    assert panel.rank.max == min(other.shape) and panel.values["name"] == "blocks.1.attn.out_proj"
    assert np.allclose(panel.figure.data[rf.SPECTRUM].y, torch.linalg.svdvals(other.double()).numpy())
    assert panel.values["error"] == pytest.approx(reconstruction_error(other, panel.rank.value), rel=1e-12)


def test_rank_panel_takes_a_single_linear_and_skips_low_rank_factors():
    linear = nn.Linear(24, 40)
    panel = RankPanel(linear, rank=3)
    assert list(panel.matrix.options) == ["linear"] and panel.values["params"] == 3 * 64 + 40
    model = nn.Sequential(nn.Linear(8, 8), LowRankLinear(8, 8, 2))
    assert list(RankPanel(model).matrix.options) == ["0"]
    with pytest.raises(ValueError, match="no nn.Linear named 'blocks.9.x'"):
        RankPanel(model, "blocks.9.x")
    assert math.isfinite(panel.values["energy"]) and 0 < panel.values["energy"] <= 1
