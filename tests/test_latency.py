"""The study's latency measurement (issue 15): a model timed in rounds interleaved with its reference
(order swapped every round, medians, the median of per-round ratios), and the encoder call in ONNX
Runtime computing what the eager encoder computes; the one measurement of an encoder against its
teacher (``eval.measure``)."""

from __future__ import annotations

import pytest
import torch
from tiny_asr import tiny_compressed_asr

import kdlab.eval.latency as latency
from kdlab.deploy.encoder_runtime import encoder_call
from kdlab.eval.measure import measure_encoder
from kdlab.models.conformer import ConformerConfig, ConformerEncoder
from kdlab.study.recipes import latency_inputs, measure_model

torch.set_num_threads(1)


class FakeClock:
    """perf_counter stand-in: each call of a timed function advances it by that function's cost."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def __call__(self) -> float:
        return self.now

    def function(self, name: str, cost: float):
        def call():
            self.calls.append(name)
            self.now += cost

        return call


def test_paired_latency_alternates_the_order_and_takes_medians_of_times_and_ratios(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency.time, "perf_counter", clock)
    model, reference = clock.function("model", 0.01), clock.function("reference", 0.03)
    result = latency.measure_paired_latency(model, reference, rounds=4, min_time_s=0.4, warmup=1)
    # warm-up + one single timing each, then blocks of round(0.4 / 4 / 0.03) = 3 calls, order swapped per round
    timed = clock.calls[4:]
    blocks = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert all(len(set(block)) == 1 and len(block) == 3 for block in blocks), blocks
    order = ["model", "reference", "reference", "model", "model", "reference", "reference", "model"]
    assert [block[0] for block in blocks] == order
    assert result.median_s == pytest.approx(0.01) and result.reference_median_s == pytest.approx(0.03)
    assert result.speedup == pytest.approx(3.0) and result.rounds == 4


def test_onnx_runtime_encoder_call_computes_the_eager_encoder_and_measure_model_names_its_runtime(
    tmp_path, monkeypatch
):
    import kdlab.study.recipes as recipes

    model = tiny_compressed_asr(streaming=False)
    features, lengths = latency_inputs(model, 1.0)
    eager = encoder_call(model.encoder, features, lengths, "eager")
    onnx = encoder_call(model.encoder, features, lengths, "onnxruntime", tmp_path)
    with torch.inference_mode():
        expected = eager()[0]
    assert (torch.from_numpy(onnx()[0]) - expected).abs().max() <= 1e-4
    asked = []  # measure_model's call in the runtime it was given: the one exported above, not a second export
    monkeypatch.setattr(recipes, "encoder_call", lambda encoder, f, n, runtime, folder: asked.append(runtime) or onnx)
    measured = measure_model(model, model.encoder, eager, 1.0, min_time=0.01, min_runs=2, runtime="onnxruntime")
    assert asked == ["onnxruntime"]
    assert measured["latency_runtime"] == "onnxruntime" and measured["latency_audio_seconds"] == 1.0
    assert measured["latency_ms"] > 0 and measured["latency_teacher_ms"] > 0 and measured["latency_speedup"] > 0
    assert measured["encoder_params"] == model.encoder.num_parameters()
    with pytest.raises(ValueError, match="runtime must be one of"):
        encoder_call(model.encoder, features, lengths, "tensorrt")


def test_latency_vs_macs_rows_pair_each_encoder_with_the_first_and_the_figure_draws_them():
    from kdlab.compress.param_count import expected_macs_per_second
    from kdlab.viz.latency_figures import latency_vs_macs_figure, measure_latency_vs_macs

    big, small = tiny_compressed_asr(seed=0).encoder, tiny_compressed_asr(seed=1).encoder
    small.blocks = small.blocks[:1]  # one block fewer: fewer MACs
    small.config = type(small.config).from_dict(
        {**small.config.to_dict(), "num_layers": 1, "layer_dims": small.config.layer_dims[:1]}
    )
    rows = measure_latency_vs_macs({"big": big, "small": small}, seconds=0.5, runtime="eager", rounds=2, min_time=0.01)
    assert [r["name"] for r in rows] == ["big", "small"] and rows[0]["mac_reduction"] == 1.0
    assert rows[1]["mac_reduction"] == pytest.approx(
        float(expected_macs_per_second(big, deterministic=True))
        / float(expected_macs_per_second(small, deterministic=True))
    )
    assert rows[1]["mac_reduction"] > 1
    figure = latency_vs_macs_figure(rows)
    line, points = figure.data
    assert list(points.x) == [r["macs_per_second"] / 1e6 for r in rows]
    assert list(points.y) == [r["latency_ms"] for r in rows] and list(points.text) == ["big", "small"]
    assert line.y[1] / line.x[1] == pytest.approx(rows[0]["latency_ms"] / (rows[0]["macs_per_second"] / 1e6))


def test_measure_encoder_counts_both_encoders_and_adds_what_the_timer_measured():
    teacher = ConformerEncoder(ConformerConfig(d_model=32, num_layers=2, num_heads=2, head_dim=16, ffn_dim=64))
    student = ConformerEncoder(ConformerConfig(d_model=32, num_layers=1, num_heads=2, head_dim=16, ffn_dim=64))
    timed = []
    measured = measure_encoder(student, teacher, lambda s, t: timed.append((s, t)) or {"latency_ms": 1.0})
    assert timed == [(student, teacher)] and measured["latency_ms"] == 1.0
    params, teacher_params = student.num_parameters(), teacher.num_parameters()
    assert (measured["encoder_params"], measured["teacher_encoder_params"]) == (params, teacher_params)
    assert measured["achieved_sparsity"] == pytest.approx(1 - params / teacher_params) and params < teacher_params
    assert measured["mac_reduction"] == pytest.approx(measured["teacher_macs_per_second"] / measured["macs_per_second"])
    assert measured["mac_reduction"] > 1 and "latency_ms" not in measure_encoder(student, teacher)
