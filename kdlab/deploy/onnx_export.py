"""Export an RNN-T model to ONNX (``torch.onnx``, dynamo exporter) and check it in ONNX Runtime.

``export_onnx(model, "model.onnx")`` writes three graphs and a manifest (``kdlab.deploy.graphs``):

* ``model.onnx``: the encoder, offline (whole utterances) or, with ``streaming=True``, one chunk
  step with its caches as inputs and outputs;
* ``model.predictor.onnx``, ``model.joiner.onnx``: one predictor step and the joiner;
* ``model.json``: what a caller needs besides (mode, chunk size, cache names and shapes, the input
  and output names, the tokenizer and CMVN when given) and the check's numbers.

The check runs fixed random inputs through PyTorch and ONNX Runtime and records the largest
absolute difference per graph; streaming is checked chunk by chunk against ``encoder.stream`` on a
whole utterance. An export whose difference exceeds ``tolerance`` raises ``ExportCheckError``.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from kdlab.deploy.graphs import (
    JoinerGraph,
    OfflineEncoderGraph,
    PredictorStepGraph,
    StreamingChunkGraph,
    cache_slots,
    chunk_input_frames,
    initial_caches,
    stream_chunks,
)
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel

MANIFEST_FORMAT = "kdlab-onnx-rnnt"
TOLERANCE = 1e-4
#: Seconds of random features per check utterance (10 ms frames) and the seed of the check inputs.
CHECK_SECONDS, CHECK_SEED = 3.0, 0


class ExportCheckError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    """Files written (role -> path), largest |ONNX Runtime - PyTorch| per graph, and the tolerance."""

    files: dict[str, Path]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def companion_paths(path: str | Path) -> dict[str, Path]:
    """The files of an export to ``path``: encoder, predictor, joiner, manifest."""
    path = Path(path)
    stem = path.with_suffix("")
    return {
        "encoder": path,
        "predictor": Path(f"{stem}.predictor.onnx"),
        "joiner": Path(f"{stem}.joiner.onnx"),
        "manifest": Path(f"{stem}.json"),
    }


def _export(
    graph: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic_shapes
) -> None:
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on absent torchvision ops are not about this model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # and on renamed dynamic axes
            torch.onnx.export(
                graph.eval(),
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=input_names,
                output_names=output_names,
                verbose=False,
                optimize=True,
            )
    finally:
        exporter_log.setLevel(level)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_diff(onnx_outputs, torch_outputs) -> float:
    return max(
        float((torch.from_numpy(o).to(t.dtype) - t).abs().max()) if t.numel() else 0.0
        for o, t in zip(onnx_outputs, torch_outputs)
    )


def _check_features(
    encoder: ConformerEncoder, generator: torch.Generator, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random check features (B, T, F) and lengths (B,), the rows shorter and shorter (padded)."""
    frames = round(100 * CHECK_SECONDS)
    features = torch.randn(batch, frames, encoder.config.input_dim, generator=generator)
    lengths = torch.linspace(frames, frames * 0.6, batch).long()  # padded rows, as a batch has
    return features, lengths


def _export_offline(encoder: ConformerEncoder, projection: nn.Module, path: Path, generator: torch.Generator) -> float:
    graph = OfflineEncoderGraph(encoder, projection)
    features, lengths = _check_features(encoder, generator, batch=2)
    batch, frames = Dim("batch", min=1), Dim("frames", min=encoder.config.receptive_field)
    _export(
        graph,
        (features, lengths),
        path,
        ["features", "lengths"],
        ["encoder_out", "encoder_lengths", "encoder_projected"],
        {"features": {0: batch, 1: frames}, "lengths": {0: batch}},
    )
    with torch.inference_mode():
        enc, enc_lengths, projected = graph(features, lengths)
    onnx_out = _session(path).run(None, {"features": features.numpy(), "lengths": lengths.numpy()})
    valid = torch.arange(enc.shape[1])[None, :] < enc_lengths[:, None]  # padded frames are unspecified
    masked = [enc * valid[..., None], enc_lengths.float(), projected * valid[..., None]]
    onnx_masked = [
        onnx_out[0] * valid[..., None].numpy(),
        onnx_out[1].astype("float32"),
        onnx_out[2] * valid[..., None].numpy(),
    ]
    return _max_diff(onnx_masked, masked)


def _export_streaming(
    encoder: ConformerEncoder, projection: nn.Module, path: Path, generator: torch.Generator
) -> float:
    graph = StreamingChunkGraph(encoder, projection)
    config = encoder.config
    slots = graph.slots
    # Trace with a non-empty past (a past of 0 frames would be specialised); run from an empty one.
    traced_caches = [
        torch.randn(2, *(config.chunk_size if d is None else d for d in s.shape), generator=generator) for s in slots
    ]
    stride = config.subsampling_factor
    features = torch.randn(2, chunk_input_frames(config.chunk_size, stride), config.input_dim, generator=generator)
    batch, frames, past = Dim("batch", min=1), Dim("frames", min=config.receptive_field), Dim("past", min=0)
    names = [s.name for s in slots]
    _export(
        graph,
        (features, torch.tensor(config.chunk_size), *traced_caches),
        path,
        ["features", "position", *names],
        ["encoder_out", "encoder_projected", *(f"{n}.next" for n in names)],
        {
            "features": {0: batch, 1: frames},
            "position": None,
            "caches": tuple({0: batch} if s.kind == "conv" else {0: batch, 2: past} for s in slots),
        },
    )
    utterance, _ = _check_features(encoder, generator, batch=1)
    with torch.inference_mode():
        reference, _ = encoder.stream(utterance, final=True)
    session = _session(path)
    caches = [c.numpy() for c in initial_caches(encoder, 1)]
    worst, start = 0.0, 0
    for chunk, first in stream_chunks(utterance.shape[1], config.chunk_size, stride):
        window = utterance[:, stride * first : stride * first + chunk_input_frames(chunk, stride)].numpy()
        out = session.run(
            None, {"features": window, "position": torch.tensor(first).numpy(), **dict(zip(names, caches))}
        )
        caches = out[2:]
        worst = max(worst, _max_diff(out[:1], [reference[:, first : first + chunk]]))
        start = first + chunk
    if start != reference.shape[1]:
        raise ExportCheckError(f"the chunk loop produced {start} frames, encoder.stream {reference.shape[1]}")
    return worst


def _export_predictor(model: RNNTModel, path: Path, generator: torch.Generator) -> float:
    graph = PredictorStepGraph(model)
    config = model.config
    tokens = torch.randint(1, config.vocab_size, (3, 1), generator=generator)
    h, c = (torch.randn(config.pred_layers, 3, config.pred_hidden, generator=generator) for _ in range(2))
    n = Dim("hypotheses", min=1)
    _export(
        graph,
        (tokens, h, c),
        path,
        ["tokens", "h", "c"],
        ["predictor_projected", "h_next", "c_next"],
        {"tokens": {0: n}, "h": {1: n}, "c": {1: n}},
    )
    with torch.inference_mode():
        expected = graph(tokens, h, c)
    return _max_diff(_session(path).run(None, {"tokens": tokens.numpy(), "h": h.numpy(), "c": c.numpy()}), expected)


def _export_joiner(model: RNNTModel, path: Path, generator: torch.Generator) -> float:
    graph = JoinerGraph(model)
    enc, pred = (torch.randn(5, model.config.joint_dim, generator=generator) for _ in range(2))
    n = Dim("vectors", min=1)
    _export(
        graph,
        (enc, pred),
        path,
        ["encoder_projected", "predictor_projected"],
        ["logits"],
        {"enc_projected": {0: n}, "pred_projected": {0: n}},
    )
    with torch.inference_mode():
        expected = graph(enc, pred)
    return _max_diff(
        _session(path).run(None, {"encoder_projected": enc.numpy(), "predictor_projected": pred.numpy()}), [expected]
    )


def export_encoder(encoder: ConformerEncoder, path: str | Path, streaming: bool = False) -> float:
    """Export the encoder alone (offline graph, or the streaming chunk step) to ``path``; returns the
    largest |ONNX Runtime - PyTorch| of the check (the graph's "encoder_projected" equals "encoder_out")."""
    encoder = encoder.cpu().float().eval()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    export = _export_streaming if streaming else _export_offline
    return export(encoder, nn.Identity(), Path(path), torch.Generator().manual_seed(CHECK_SEED))


def export_onnx(
    model: RNNTModel, path: str | Path, streaming: bool = False, tokenizer=None, cmvn=None, tolerance: float = TOLERANCE
) -> ExportReport:
    """Export ``model`` (eval, CPU, float32) to ``path`` and its companions, check them in ONNX Runtime.

    ``streaming`` exports the chunk step (the model must be a streaming one). ``tokenizer`` and
    ``cmvn`` (``to_dict()``-able) go into the manifest, so the files alone can transcribe.
    Raises ``ExportCheckError`` when a graph differs from PyTorch by more than ``tolerance``.
    """
    config = model.encoder.config
    if streaming and not config.streaming:
        raise ValueError(
            "--streaming needs a model trained for streaming (chunked attention, causal convolution); "
            "this one is offline: export it without --streaming, or pick a streaming run"
        )
    model = model.cpu().float().eval()
    files = companion_paths(path)
    files["encoder"].parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(CHECK_SEED)
    report = ExportReport({k: v for k, v in files.items()}, tolerance=tolerance)
    encoder_export = _export_streaming if streaming else _export_offline
    report.max_abs_diff["encoder"] = encoder_export(model.encoder, model.joiner.enc_proj, files["encoder"], generator)
    report.max_abs_diff["predictor"] = _export_predictor(model, files["predictor"], generator)
    report.max_abs_diff["joiner"] = _export_joiner(model, files["joiner"], generator)
    manifest = {
        "format": MANIFEST_FORMAT,
        "mode": "streaming" if streaming else "offline",
        "chunk_size": config.chunk_size,
        "left_chunks": config.left_chunks,
        "input_dim": config.input_dim,
        "subsampling_factor": config.subsampling_factor,
        "caches": [asdict(s) | {"name": s.name} for s in cache_slots(model.encoder)] if streaming else [],
        "predictor": {"layers": model.config.pred_layers, "hidden": model.config.pred_hidden},
        "files": {k: v.name for k, v in files.items() if k != "manifest"},
        "tokenizer": None if tokenizer is None else tokenizer.to_dict(),
        "cmvn": None if cmvn is None else cmvn.to_dict(),
        "max_abs_diff": report.max_abs_diff,
        "tolerance": tolerance,
    }
    files["manifest"].write_text(json.dumps(manifest, indent=1))
    if report.worst > tolerance:
        raise ExportCheckError(
            f"ONNX Runtime differs from PyTorch by {report.worst:.2e} > {tolerance:.0e} "
            f"({report.max_abs_diff}); the files are in {files['encoder'].parent} for inspection"
        )
    return report
