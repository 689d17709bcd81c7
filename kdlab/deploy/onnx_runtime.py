"""An exported RNN-T model in ONNX Runtime, shaped so that ``kdlab.models.decoding`` decodes with it.

``OnnxRNNT(path)`` opens the files ``export_onnx`` wrote (``path`` is the encoder file). Its
``encode`` runs the encoder (whole utterance, or chunk by chunk for a streaming export) and its
``predictor`` / ``joiner`` attributes answer the calls ``greedy_search`` and ``beam_search`` make.
The graphs already apply the joiner's projections (``kdlab.deploy.graphs``), so here
``joiner.project_encoder`` and ``joiner.project_predictor`` are the identity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kdlab.deploy.graphs import chunk_input_frames, stream_chunks
from kdlab.deploy.onnx_export import MANIFEST_FORMAT, companion_paths


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Predictor:
    """``predictor(tokens (N, 1), state | None) -> (projected (N, 1, J), (h, c))`` in ONNX Runtime."""

    def __init__(self, session, layers: int, hidden: int) -> None:
        self.session, self.layers, self.hidden = session, layers, hidden

    def __call__(self, tokens: torch.Tensor, state=None):
        n = tokens.shape[0]
        if state is None:
            state = (torch.zeros(self.layers, n, self.hidden),) * 2
        out, h, c = self.session.run(None, {"tokens": tokens.numpy(), "h": state[0].numpy(), "c": state[1].numpy()})
        return torch.from_numpy(out)[:, None], (torch.from_numpy(h), torch.from_numpy(c))


class _Joiner:
    """``joint(enc_projected, pred_projected)``, broadcastable (..., J) -> logits (..., V)."""

    def __init__(self, session) -> None:
        self.session = session

    @staticmethod
    def project_encoder(enc: torch.Tensor) -> torch.Tensor:
        return enc

    @staticmethod
    def project_predictor(pred: torch.Tensor) -> torch.Tensor:
        return pred

    def joint(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        enc, pred = torch.broadcast_tensors(enc, pred)
        shape = enc.shape
        (logits,) = self.session.run(
            None,
            {
                "encoder_projected": enc.reshape(-1, shape[-1]).contiguous().numpy(),
                "predictor_projected": pred.reshape(-1, shape[-1]).contiguous().numpy(),
            },
        )
        return torch.from_numpy(logits).reshape(*shape[:-1], -1)


class OnnxRNNT:
    """The exported model behind ``path`` (the encoder file of an ``export_onnx`` call).

    Attributes: ``manifest`` (the export's JSON), ``streaming`` (a chunk-step export),
    ``predictor`` and ``joiner`` (for the decoders). ``threads`` sets ONNX Runtime's intra-op threads.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        files = companion_paths(path)
        if not files["manifest"].is_file():
            raise FileNotFoundError(
                f"{files['manifest']} is missing: export the model with "
                "`python -m kdlab export RUN_DIR --format onnx --out FILE` first"
            )
        self.manifest = json.loads(files["manifest"].read_text())
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{files['manifest']} is not a kdlab ONNX export manifest (format {MANIFEST_FORMAT!r})")
        self.streaming = self.manifest["mode"] == "streaming"
        self.encoder = _session(files["encoder"], threads)
        predictor = self.manifest["predictor"]
        self.predictor = _Predictor(_session(files["predictor"], threads), predictor["layers"], predictor["hidden"])
        self.joiner = _Joiner(_session(files["joiner"], threads))

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> projected encoder frames (B, T', J), their lengths (B,).

        A streaming export runs chunk by chunk; it takes one utterance at a time (B = 1, no padding).
        """
        if not self.streaming:
            _, enc_lengths, projected = self.encoder.run(
                None, {"features": features.float().numpy(), "lengths": lengths.long().numpy()}
            )
            return torch.from_numpy(projected), torch.from_numpy(enc_lengths)
        if features.shape[0] != 1:
            raise ValueError(f"a streaming export encodes one utterance at a time, got a batch of {features.shape[0]}")
        return self.stream(features[:, : int(lengths[0])])

    def stream(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T, F) -> projected encoder frames (1, T', J) and (1,) lengths, computed chunk by chunk."""
        caches = self.initial_caches(features.shape[0])
        names = [c["name"] for c in self.manifest["caches"]]
        outputs = []
        stride = self.manifest["subsampling_factor"]
        for chunk, first in stream_chunks(features.shape[1], self.manifest["chunk_size"], stride):
            window = features[:, stride * first : stride * first + chunk_input_frames(chunk, stride)].float().numpy()
            out = self.encoder.run(
                None, {"features": window, "position": np.array(first, dtype=np.int64), **dict(zip(names, caches))}
            )
            outputs.append(out[1])
            caches = out[2:]
        projected = torch.from_numpy(np.concatenate(outputs, axis=1))
        return projected, torch.tensor([projected.shape[1]])

    def initial_caches(self, batch: int) -> list[np.ndarray]:
        """Caches at the start of a stream (no past keys/values, zero convolution tails)."""
        return [
            np.zeros((batch, *(0 if d is None else d for d in c["shape"])), dtype=np.float32)
            for c in self.manifest["caches"]
        ]
