"""ONNX export (issue 15, acceptance 3): a tiny compressed model (pruned branches, low-rank layers)
exported offline and as a streaming chunk step matches PyTorch in ONNX Runtime within 1e-4, on inputs
the export's own check did not see, chunk by chunk for streaming; decoding through ONNX Runtime gives
PyTorch's hypotheses; `kdlab export` writes the files and reports the differences."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_asr import tiny_compressed_asr

from kdlab.cli import main
from kdlab.deploy.onnx_export import TOLERANCE, companion_paths, export_onnx
from kdlab.deploy.onnx_runtime import OnnxRNNT
from kdlab.models.decoding import beam_search, greedy_search

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def offline(offline_export):
    """(model, runtime) of the session's offline export (tests/conftest.py)."""
    return offline_export.model, OnnxRNNT(offline_export.onnx, threads=1)


@pytest.fixture(scope="module", params=["4x", "8x-half-rate"])
def streaming(tmp_path_factory, request):
    """(model, the export's own check, runtime) of a streaming tiny model carrying one chunk of left
    context: at 4x the session's export by `kdlab export --streaming` (tests/conftest.py), at 8x with
    half-rate blocks one exported here."""
    if request.param == "4x":
        shared = request.getfixturevalue("streaming_export")
        model, path = shared.model, shared.onnx
    else:
        model = tiny_compressed_asr(
            streaming=True, left_chunks=1, seed=1, subsampling_factor=8, half_rate_blocks=[0, 1]
        )
        path = tmp_path_factory.mktemp("streaming") / "model.onnx"
        export_onnx(model, path, streaming=True)
    return model, _check_of(path), OnnxRNNT(path, threads=1)


def _check_of(path) -> dict:
    """The export's own check as its manifest records it: {graph role: max |ONNX Runtime - PyTorch|}."""
    return json.loads(companion_paths(path)["manifest"].read_text())["max_abs_diff"]


def _features(batch: int, frames: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def test_offline_export_writes_its_files_and_its_check_is_within_tolerance(offline_export):
    report = offline_export.report
    assert set(report.files) == {"encoder", "predictor", "joiner", "manifest"}
    assert all(path.is_file() for path in report.files.values())
    assert set(report.max_abs_diff) == {"encoder", "predictor", "joiner"}
    assert report.worst <= TOLERANCE
    runtime = OnnxRNNT(offline_export.onnx, threads=1)
    assert runtime.manifest["mode"] == "offline" and runtime.manifest["max_abs_diff"] == report.max_abs_diff


def test_offline_onnx_encoder_matches_pytorch_on_a_new_padded_batch(offline):
    model, runtime = offline
    features, lengths = _features(3, 250, seed=7), torch.tensor([250, 180, 61])
    with torch.inference_mode():
        enc, enc_lengths = model.transcribe(features, lengths)
        expected = model.joiner.project_encoder(enc)
    projected, onnx_lengths = runtime.encode(features, lengths)
    assert torch.equal(onnx_lengths, enc_lengths)
    for b, n in enumerate(enc_lengths.tolist()):  # frames past a row's length are unspecified
        assert (projected[b, :n] - expected[b, :n]).abs().max() <= TOLERANCE


def test_greedy_and_beam_search_through_onnx_runtime_give_pytorchs_hypotheses(offline):
    model, runtime = offline
    features, lengths = _features(2, 200, seed=8), torch.tensor([200, 150])
    with torch.inference_mode():
        enc, enc_lengths = model.transcribe(features, lengths)
    projected, onnx_lengths = runtime.encode(features, lengths)
    torch_greedy = greedy_search(model, enc, enc_lengths)
    onnx_greedy = greedy_search(runtime, projected, onnx_lengths)
    assert [h.tokens for h in onnx_greedy] == [h.tokens for h in torch_greedy]
    assert all(len(h.tokens) > 0 for h in torch_greedy)  # the comparison is not between two empty outputs
    assert [h.score for h in onnx_greedy] == pytest.approx([h.score for h in torch_greedy], abs=1e-3)
    torch_beam = beam_search(model, enc, enc_lengths, beam=3)
    onnx_beam = beam_search(runtime, projected, onnx_lengths, beam=3)
    assert [[h.tokens for h in nbest] for nbest in onnx_beam] == [[h.tokens for h in nbest] for nbest in torch_beam]


def test_streaming_chunk_step_matches_pytorch_chunk_by_chunk_and_trims_its_caches(streaming):
    model, check, runtime = streaming
    assert set(check) == {"encoder", "predictor", "joiner"} and max(check.values()) <= TOLERANCE
    config = model.encoder.config
    s = config.subsampling_factor
    utterance = _features(1, 239, seed=9)  # 59 encoder frames at 4x (14 chunks of 4, then 3), 29 at 8x (7, then 1)
    with torch.inference_mode():
        reference, _ = model.encoder.stream(utterance, final=True)
        reference = model.joiner.project_encoder(reference)
    names = [c["name"] for c in runtime.manifest["caches"]]
    assert names == ["block0.keys", "block0.values", "block0.conv", "block1.conv"]  # block 1 has no attention
    caches, first = runtime.initial_caches(1), 0
    window = config.chunk_size
    while first < reference.shape[1]:
        chunk = min(window, reference.shape[1] - first)
        inputs = {
            "features": utterance[:, s * first : s * first + s * chunk + s - 1].numpy(),
            "position": torch.tensor(first).numpy(),
            **dict(zip(names, caches)),
        }
        out = runtime.encoder.run(None, inputs)
        assert (torch.from_numpy(out[1]) - reference[:, first : first + chunk]).abs().max() <= TOLERANCE, first
        caches = out[2:]
        # left_chunks = 1: the keys and values of one chunk of 4 frames (2 at half rate) are carried, no more.
        rate = 2 if config.runs_at_half_rate(0) else 1
        assert caches[0].shape[2] == min(-(-(first + chunk) // rate), config.left_chunks * config.chunk_size // rate)
        first += chunk
    projected, lengths = runtime.encode(utterance, torch.tensor([239]))
    assert int(lengths) == reference.shape[1] and (projected - reference).abs().max() <= TOLERANCE


def test_a_streaming_export_of_an_offline_model_is_refused_with_what_to_do(offline, tmp_path):
    model, _ = offline
    with pytest.raises(ValueError, match="needs a model trained for streaming"):
        export_onnx(model, tmp_path / "x.onnx", streaming=True)


def test_cli_export_writes_the_files_and_reports_each_difference(streaming_export):
    files = companion_paths(streaming_export.onnx)  # `kdlab export RUN_DIR --streaming --out FILE` wrote them
    assert all(path.is_file() for path in files.values())
    manifest = json.loads(files["manifest"].read_text())
    assert manifest["mode"] == "streaming" and manifest["tokenizer"]["kind"] == "char"
    assert manifest["cmvn"] == json.loads((streaming_export.run_dir / "cmvn.json").read_text())
    printed = streaming_export.printed
    assert f"exported streaming chunk step (160 ms chunks) model of {streaming_export.run_dir}" in printed
    for role in ("encoder", "predictor", "joiner"):
        assert f"{role}" in printed and f"= {manifest['max_abs_diff'][role]:.1e}" in printed


def test_cli_export_of_a_folder_without_a_finished_run_names_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert f"{tmp_path} holds no finished run" in capsys.readouterr().err


def test_the_exported_rotary_form_rotates_like_the_eager_complex_one(monkeypatch):
    from kdlab.models.attention import apply_rotary, rotary_table

    positions, x = torch.arange(5, 12), _features(2, 7, seed=10).reshape(2, 7, 5, 16)
    complex_table = rotary_table(positions, 16)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    real_table = rotary_table(positions, 16)
    assert complex_table.is_complex() and real_table.shape == (2, 7, 8) and not real_table.is_complex()
    assert torch.allclose(apply_rotary(x, real_table), apply_rotary(x, complex_table), atol=1e-6)
    assert not torch.allclose(apply_rotary(x, real_table), x, atol=1e-3)  # it does rotate


def test_an_export_that_differs_from_pytorch_fails_and_names_the_difference(offline, tmp_path, monkeypatch):
    import kdlab.deploy.onnx_export as onnx_export

    model, _ = offline
    monkeypatch.setattr(onnx_export, "_export_offline", lambda *args: 3e-3)  # as if the encoder graph were off
    monkeypatch.setattr(onnx_export, "_export_predictor", lambda *args: 0.0)
    monkeypatch.setattr(onnx_export, "_export_joiner", lambda *args: 0.0)
    with pytest.raises(onnx_export.ExportCheckError, match=r"differs from PyTorch by 3.00e-03 > 1e-04"):
        export_onnx(model, tmp_path / "m.onnx")
    assert json.loads((tmp_path / "m.json").read_text())["max_abs_diff"]["encoder"] == 3e-3


def test_the_exported_attention_mask_is_additive_and_equals_the_boolean_one(monkeypatch):
    import torch.nn.functional as F

    from kdlab.models.attention import additive_mask

    q, k, v = (_features(2, 6 * 3, seed=11 + i).reshape(2, 3, 6, 80)[..., :8] for i in range(3))
    allowed = torch.arange(6)[None, None, None, :] < torch.tensor([6, 2])[:, None, None, None]  # (B, 1, 1, S)
    mask = additive_mask(allowed, torch.float32)
    assert mask.dtype == torch.float32 and mask[allowed].eq(0).all() and mask[~allowed].eq(torch.finfo().min).all()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), expected, atol=1e-6)


def test_the_exported_offline_encoder_has_no_nan_guard_over_the_attention_weights(offline_export):
    import onnx

    graph = onnx.load(str(offline_export.onnx), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert "Softmax" in ops and "IsNaN" not in ops  # a boolean SDPA mask would add IsNaN + Where over (B, H, T, S)


def test_a_low_rank_layer_exports_with_its_bias_in_the_rank(tmp_path):
    import onnx
    import onnxruntime as ort

    from kdlab.compress.lowrank import LowRankLinear
    from kdlab.deploy.onnx_export import _export

    torch.manual_seed(3)
    layer = LowRankLinear(12, 20, rank=3).eval()
    with torch.no_grad():
        layer.second.bias.uniform_(-1.0, 1.0)
    x = _features(2, 5, seed=12)[..., :12]
    _export(layer, (x,), tmp_path / "layer.onnx", ["x"], ["y"], {"x": {0: torch.export.Dim("batch", min=1)}})
    graph = onnx.load(str(tmp_path / "layer.onnx")).graph
    producer = {output: node for node in graph.node for output in node.output}
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    last = producer["y"]
    assert last.op_type == "MatMul" and shapes[last.input[1]] == (4, 20)  # [A, bias]: rank + 1 rows, no bias Add after
    session = ort.InferenceSession(str(tmp_path / "layer.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = layer(x)
    assert (torch.from_numpy(session.run(None, {"x": x.numpy()})[0]) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("stride", [4, 8])
def test_the_exported_subsampling_projection_is_a_convolution_equal_to_the_linear_one(monkeypatch, stride):
    from kdlab.models.subsampling import Subsampling

    torch.manual_seed(4)
    subsampling = Subsampling(80, 24, 8, stride=stride).eval()
    with torch.no_grad():
        subsampling.linear.bias.uniform_(-1.0, 1.0)
    features = _features(2, 40, seed=13)
    with torch.inference_mode():
        eager = subsampling(features)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        exported = subsampling(features)
    assert exported.shape == eager.shape == (2, (40 - stride + 1) // stride, 24)
    assert torch.allclose(exported, eager, atol=1e-5)
