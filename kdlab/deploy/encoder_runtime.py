"""An encoder's batch call in a chosen runtime, for latency measurements: eager PyTorch or ONNX Runtime.

ONNX Runtime is the faster runtime the kit ships for inference (``benchmarks/pruned_speed.py``
measures both); ``encoder_call(..., runtime="onnxruntime")`` exports the encoder (checked against
PyTorch) into ``folder`` and returns a call of the ONNX Runtime session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from kdlab.deploy.onnx_export import export_encoder
from kdlab.models.conformer import ConformerEncoder

RUNTIMES = ("eager", "onnxruntime")


def encoder_call(
    encoder: ConformerEncoder,
    features: torch.Tensor,
    lengths: torch.Tensor,
    runtime: str,
    folder: str | Path | None = None,
    threads: int | None = None,
) -> Callable[[], object]:
    """A no-argument call running ``encoder`` on features (B, T, F), lengths (B,) in ``runtime``.

    ``folder``: where the ONNX export goes (needed for "onnxruntime"); ``threads``: ONNX Runtime's
    intra-op threads (default: torch's current count, so both runtimes use the same).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    encoder = encoder.eval()
    if runtime == "eager":
        return lambda: encoder(features, lengths)
    if folder is None:
        raise ValueError("the onnxruntime runtime needs a folder to export the encoder into")
    import onnxruntime as ort

    path = Path(folder) / "encoder.onnx"
    export_encoder(encoder, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or torch.get_num_threads(), 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"features": features.float().numpy(), "lengths": lengths.long().numpy()}
    return lambda: session.run(None, feed)
