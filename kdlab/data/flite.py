"""Speech synthesis with CMU flite, the corpus' second engine (Debian package `flite`, run as a
subprocess; `KDLAB_FLITE` may name the binary).

flite's voices are few but unlike espeak-ng's formant synthesiser: diphone concatenation (kal,
kal16) and statistical parametric voices trained on recordings (awb, rms, slt). Rate maps to
flite's `duration_stretch` (about 180 words per minute at 1.0), pitch to `int_f0_target_mean`.
flite has no random state: the same text and voice give the same samples in any process.
flite is BSD-style licensed; kdlab runs it as a separate program, unmodified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kdlab.data.signal import SAMPLE_RATE, resample, trim_silence
from kdlab.data.voices import FLITE_VOICES, Voice

BINARY_ENV = "KDLAB_FLITE"
NATURAL_RATE_WPM = 180.0  # flite's speaking rate at duration_stretch 1.0 (about)
MISSING = (
    "flite is not installed, so the corpus uses espeak-ng voices only (a different corpus, with its "
    "own digest). For the second engine install Debian's 'flite' package (`make corpus` does it "
    "when run as root) or set KDLAB_FLITE to the flite binary."
)


def flite_binary() -> str | None:
    """Path of the flite program: `$KDLAB_FLITE` if set (None if it is not executable), else `flite`
    on the PATH."""
    override = os.environ.get(BINARY_ENV)
    if override is not None:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    return shutil.which("flite")


def flite_available() -> bool:
    return flite_binary() is not None


def flite_arguments(voice: Voice) -> list[str]:
    """The flite options that make `voice`: voice name, duration stretch from rate, f0 from pitch."""
    if voice.engine != "flite":
        raise ValueError(f"not a flite voice: {voice.name}")
    f0 = FLITE_VOICES[voice.variant][1] * 2 ** ((voice.pitch - 50) / 100)
    return [
        "-voice",
        voice.variant,
        "--setf",
        f"duration_stretch={NATURAL_RATE_WPM / voice.rate:.4f}",
        "--setf",
        f"int_f0_target_mean={f0:.1f}",
    ]


def synthesize_flite(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with a flite `voice`: float32 mono (T,) in [-1, 1] at 16 kHz, silence trimmed."""
    import soundfile

    binary = flite_binary()
    if binary is None:
        raise RuntimeError(MISSING)
    with tempfile.TemporaryDirectory(prefix="kdlab-flite-") as folder:
        path = Path(folder) / "out.wav"
        done = subprocess.run(
            [binary, *flite_arguments(voice), "-t", text, "-o", str(path)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(f"flite failed for {text!r} with voice {voice.name}: {done.stderr.strip()[-300:]}")
        samples, rate = soundfile.read(path, dtype="float32")
    if len(samples) == 0:
        raise RuntimeError(f"flite produced no audio for {text!r} with voice {voice.name}")
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, SAMPLE_RATE)
    return np.clip(trim_silence(samples), -1.0, 1.0).astype(np.float32)
