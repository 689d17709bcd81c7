"""Robust audio loading: every waveform inside kdlab is mono float32 at 16 kHz.

`load_audio` reads with `soundfile` (torchaudio >= 2.9 has no I/O backend of its own),
downmixes several channels by averaging, and resamples other rates with
`torchaudio.functional.resample`. Anything unusable raises `AudioError`, a `ValueError`
whose message names the file and says what is wrong, and whose `reason` is one of
`REASONS` so callers (the dataset, the readers) can count skipped files by cause.
"""

from __future__ import annotations

import struct
from pathlib import Path

import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16000

REASONS = ("missing_audio", "empty_audio", "truncated_audio", "corrupt_audio", "not_audio")

# Leading bytes of the containers libsndfile reads; a file that starts like one of these but
# fails to open is a damaged audio file, anything else that fails is not audio at all.
_AUDIO_MAGIC = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"fLaC",
    b"OggS",
    b"FORM",
    b".snd",
    b"caff",
    b"ID3",
    b"\xff\xfb",
    b"\xff\xf3",
    b"\xff\xf2",
)


class AudioError(ValueError):
    """An audio file that cannot be used; `path` and `reason` (one of `REASONS`) say why."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"AudioError reason must be one of {REASONS}, got {reason!r}")
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {detail}")


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Read an audio file as a mono float32 waveform `(T,)` in [-1, 1] at `target_sr` Hz.

    Several channels are averaged; other sample rates are resampled. Raises `AudioError`
    for missing, empty (0 bytes or 0 samples), truncated, corrupt or non-audio files.
    """
    if target_sr <= 0:
        raise ValueError(f"target_sr must be a positive number of Hz, got {target_sr}")
    path = _check_exists(path)
    try:
        with sf.SoundFile(str(path)) as f:
            sample_rate, declared_frames, container = f.samplerate, f.frames, f.format
            data = f.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as error:
        raise _read_error(path, error) from None
    if declared_frames == 0:
        raise AudioError(path, "empty_audio", "audio file holds 0 samples; re-export it or drop it from the manifest")
    if data.shape[0] < declared_frames:
        raise AudioError(
            path,
            "truncated_audio",
            f"truncated: header declares {declared_frames} samples, only {data.shape[0]} could be read",
        )
    if container == "WAV":
        missing = _wav_missing_bytes(path)
        if missing:
            raise AudioError(
                path,
                "truncated_audio",
                f"truncated WAV: the data chunk is {missing} bytes shorter than its header says",
            )
    wave = torch.from_numpy(data).mean(dim=1) if data.shape[1] > 1 else torch.from_numpy(data[:, 0].copy())
    if not torch.isfinite(wave).all():
        raise AudioError(path, "corrupt_audio", "corrupt: samples contain NaN or infinity")
    if sample_rate != target_sr:
        wave = torchaudio.functional.resample(wave, sample_rate, target_sr)
    return wave.contiguous()


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header only (no decoding); raises `AudioError`."""
    path = _check_exists(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as error:
        raise _read_error(path, error) from None
    if info.frames == 0:
        raise AudioError(path, "empty_audio", "audio file holds 0 samples; re-export it or drop it from the manifest")
    return info.frames / info.samplerate


def _check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an audio file" if path.is_dir() else "audio file not found"
        raise AudioError(path, "missing_audio", f"{what}; check the path in the manifest")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty_audio", "audio file is empty (0 bytes)")
    return path


def _read_error(path: Path, error: Exception) -> AudioError:
    """Classify a libsndfile failure: damaged audio container, or not audio at all."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_AUDIO_MAGIC):
        return AudioError(path, "corrupt_audio", f"corrupt or truncated audio file ({error})")
    return AudioError(path, "not_audio", f"not an audio file libsndfile can read (WAV, FLAC, OGG, MP3, ...): {error}")


def _wav_missing_bytes(path: Path) -> int:
    """Bytes missing at the end of a RIFF/WAVE data chunk (0 when complete or length unknown).

    libsndfile silently shortens a truncated WAV to the bytes present, so the header is checked.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # written by a streaming tool: length not recorded
                    return 0
                return max(0, chunk_size - (size - offset - 8))
            offset += 8 + chunk_size + (chunk_size & 1)
    return 0
