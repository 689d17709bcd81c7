"""Signal helpers shared by the synthesis engines: band-limited resampling and silence trimming.

Pure numpy, so results do not depend on thread settings or on which process computes them.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
_TRIM_THRESHOLD_DB = -45.0  # frames this far below the loudest frame count as silence
_TRIM_MARGIN_S = 0.05  # silence kept before the first and after the last loud frame


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading/trailing silence (10 ms frames under -45 dB of the loudest), keeping 50 ms margins.

    audio: (T,) float. Returns a (T',) view; all-silent input comes back unchanged.
    """
    frame = sample_rate // 100
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    energy = (audio[: n_frames * frame].reshape(n_frames, frame).astype(np.float64) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (_TRIM_THRESHOLD_DB / 10))
    if energy.max() == 0 or len(loud) == 0:
        return audio
    margin = int(_TRIM_MARGIN_S * sample_rate)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def _smooth_length(n: int) -> int:
    """Smallest m >= n whose prime factors are all <= 7 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling by FFT (ideal low-pass at the lower Nyquist frequency).

    audio: (T,) float, assumed to start and end near silence (the FFT treats it as periodic).
    Returns (round(T * new_rate / orig_rate),) float32. Pure numpy, so results do not depend
    on thread settings. Zero-pads to a whole number of rate blocks of an FFT-friendly length.
    """
    step = np.gcd(orig_rate, new_rate)
    up, down = new_rate // step, orig_rate // step
    blocks = _smooth_length(-(-len(audio) // down))
    n_in, n_out = blocks * down, blocks * up
    spectrum = np.fft.rfft(audio.astype(np.float64), n_in)[: min(n_in, n_out) // 2 + 1]
    if n_out < n_in and n_out % 2 == 0:
        spectrum[-1] = spectrum[-1].real  # the new Nyquist bin must be real
    out = np.fft.irfft(spectrum, n_out) * (n_out / n_in)
    return out[: round(len(audio) * up / down)].astype(np.float32)


def power(x: np.ndarray) -> float:
    """Mean square of x (float64)."""
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
