"""Transcribe audio files with a run's model, in PyTorch or ONNX Runtime, offline or streaming.

    transcriber = Transcriber(load_run_model("runs/.../joint-offline-kd+l0-0.5-..."), runtime="onnx")
    transcriber.transcribe("clip.flac")   # Transcript(path, text, audio_seconds, compute_seconds)

Audio goes through ``kdlab.data.audio_io.load_audio`` (any format soundfile reads, resampled to
16 kHz, downmixed), the log-mel front-end and the run's CMVN, then the encoder (the whole file, or
chunk by chunk when streaming) and greedy or beam search. The ONNX runtime uses the export in
``RUN_DIR/onnx/`` and writes it there (checked) the first time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kdlab.data.audio_io import SAMPLE_RATE, load_audio
from kdlab.data.features import compute_fbank
from kdlab.deploy.onnx_export import companion_paths, export_onnx
from kdlab.deploy.onnx_runtime import OnnxRNNT
from kdlab.deploy.run_model import RunModel
from kdlab.models.decoding import beam_search, greedy_search

RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class Transcript:
    """One file's transcript, its audio duration and the compute time (features, encoder, search)."""

    path: str
    text: str
    audio_seconds: float
    compute_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Compute time / audio duration (< 1 is faster than real time)."""
        return self.compute_seconds / self.audio_seconds


def onnx_export_path(run_dir: Path, streaming: bool) -> Path:
    """Where the transcriber keeps a run's ONNX export: ``RUN_DIR/onnx/model-{offline|streaming}.onnx``."""
    return run_dir / "onnx" / f"model-{'streaming' if streaming else 'offline'}.onnx"


class Transcriber:
    """Decode audio files with ``run``'s model.

    Args:
        run: the loaded run (``load_run_model``).
        runtime: "torch" (eager PyTorch) or "onnx" (ONNX Runtime, exported on first use).
        streaming: encode chunk by chunk (needs a streaming model); otherwise the whole file at once.
        beam: None for greedy search, else the beam width.
        threads: CPU threads of the runtime (None: its default).
    """

    def __init__(
        self,
        run: RunModel,
        runtime: str = "torch",
        streaming: bool = False,
        beam: int | None = None,
        threads: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if streaming and not run.streaming:
            raise ValueError(
                f"{run.run_dir} holds an offline model (trained without chunked attention): transcribe "
                "without --streaming, or use a streaming run"
            )
        if beam is not None and beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.run, self.runtime, self.streaming, self.beam = run, runtime, streaming, beam
        self.decoder_model = run.model
        if runtime == "onnx":
            path = onnx_export_path(run.run_dir, streaming)
            if not companion_paths(path)["manifest"].is_file():
                export_onnx(run.model, path, streaming=streaming, tokenizer=run.tokenizer, cmvn=run.cmvn)
            self.decoder_model = OnnxRNNT(path, threads)
        elif threads:
            torch.set_num_threads(threads)

    def transcribe(self, path: str | Path) -> Transcript:
        """Transcribe one file; raises ``AudioError`` (a ValueError naming the file) for unusable audio."""
        wave = load_audio(path)
        seconds = wave.numel() / SAMPLE_RATE
        start = time.perf_counter()
        features = self.run.cmvn(compute_fbank(wave))[None]  # (1, T, F)
        needed = self.run.model.encoder.config.receptive_field
        if features.shape[1] < needed:
            raise ValueError(
                f"{path}: {seconds * 1000:.0f} ms of audio is too short to transcribe "
                f"(the encoder needs {needed} frames of 10 ms)"
            )
        with torch.inference_mode():
            enc, enc_lengths = self._encode(features)
            if self.beam is None:
                hypothesis = greedy_search(self.decoder_model, enc, enc_lengths)[0]
            else:
                hypothesis = beam_search(self.decoder_model, enc, enc_lengths, beam=self.beam)[0][0]
        text = self.run.tokenizer.decode(list(hypothesis.tokens))
        return Transcript(str(path), text, seconds, time.perf_counter() - start)

    def _encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T, F) -> encoder frames as the decoder model expects them (projected for ONNX), lengths."""
        lengths = torch.tensor([features.shape[1]])
        if self.runtime == "onnx":
            return self.decoder_model.encode(features, lengths)
        if self.streaming:
            enc, _ = self.run.model.encoder.stream(features, final=True)
            return enc, torch.tensor([enc.shape[1]])
        return self.run.model.transcribe(features, lengths)
