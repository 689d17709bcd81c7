"""What happens to speech between the mouth and the file: speaking faster or slower, moving
towards or away from the microphone, the room, and the channel. Every function takes the
`numpy.random.Generator` it draws from, so a seed fixes the result.

- `speed_perturb`: resample by a factor f (tempo and pitch both x f, as in Kaldi's 3-way speed
  perturbation);
- `level_envelope`: a slow gain curve (piecewise linear in dB between random anchor points);
- rooms (`ROOMS`): impulse responses of three sizes, a direct path, a few discrete early
  reflections and an exponentially decaying diffuse tail (60 dB down after RT60);
- `band_limit`: a telephone band (300..3400 Hz) or a low-pass at a random cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdlab.data.signal import power, resample

CHANNELS = ("telephone", "lowpass")
TELEPHONE_BAND_HZ = (300.0, 3400.0)
_TRANSITION_HZ = 150.0  # width of the raised-cosine edges of `band_limit`


@dataclass(frozen=True)
class Room:
    """A room size: RT60 range (s), number of early reflections and their delay range (ms)."""

    rt60_s: tuple[float, float]
    reflections: int
    reflection_delay_ms: tuple[float, float]


ROOMS = {
    "small": Room((0.15, 0.3), 4, (1.5, 8.0)),  # an office or a car
    "medium": Room((0.3, 0.6), 6, (4.0, 20.0)),  # a living room or class room
    "hall": Room((0.7, 1.2), 8, (10.0, 45.0)),  # a lecture hall or a church
}


def speed_perturb(audio: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """(T,) -> (≈T / factor,): played `factor` times faster (rounded to 0.01)."""
    factor = round(float(factor), 2)
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0:
        return np.asarray(audio, dtype=np.float64)
    return resample(np.asarray(audio, dtype=np.float64), round(sample_rate * factor), sample_rate).astype(np.float64)


def level_envelope(length: int, gain_db: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(length,) linear gains: 2..4 anchors evenly spread over the clip (inner ones jittered by up to
    a third of their spacing), each at a gain drawn from `gain_db`, joined linearly in dB (a talker
    turning or walking: no change faster than the range over a ninth of the clip)."""
    anchors = int(rng.integers(2, 5))
    spacing = 1.0 / (anchors - 1)
    positions = np.linspace(0.0, 1.0, anchors)
    positions[1:-1] += rng.uniform(-spacing / 3, spacing / 3, size=anchors - 2)
    positions *= max(length - 1, 0)
    levels = rng.uniform(*gain_db, size=anchors)
    return 10 ** (np.interp(np.arange(length), positions, levels) / 20)


def room_response(room: Room, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """(L,) impulse response of `room`: 1 at t = 0, early reflections, then a diffuse tail decaying
    by 60 dB over a RT60 drawn from the room's range."""
    rt60 = float(rng.uniform(*room.rt60_s))
    length = max(2, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    decay = np.exp(-6.9078 * t / rt60)  # 60 dB = e^-6.9078
    delays = np.sort(rng.uniform(*room.reflection_delay_ms, size=room.reflections)) / 1000
    response = rng.standard_normal(length) * decay * 0.3
    response[t < delays[0]] = 0.0  # the diffuse tail starts after the first reflection
    for delay in delays:
        index = min(length - 1, int(delay * sample_rate))
        response[index] += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.7) * decay[index]
    response[0] = 1.0
    return response


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`audio` (T,) convolved with `response` (L,), cut to T samples and scaled back to the input's
    power."""
    n = len(audio) + len(response) - 1
    size = 1 << max(n - 1, 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(response, size), size)[: len(audio)]
    return wet * np.sqrt(power(audio) / max(power(wet), 1e-20))


def band_limit(audio: np.ndarray, low_hz: float, high_hz: float, sample_rate: int = 16000) -> np.ndarray:
    """(T,) -> (T,): keep `low_hz`..`high_hz` (raised-cosine edges 150 Hz wide; low 0 = a low-pass)."""
    if not 0 <= low_hz < high_hz <= sample_rate / 2:
        raise ValueError(f"need 0 <= low_hz < high_hz <= {sample_rate / 2}, got {low_hz}..{high_hz}")
    size = 1 << max(len(audio) - 1, 1).bit_length()
    spectrum = np.fft.rfft(audio, size)
    frequency = np.fft.rfftfreq(size, 1 / sample_rate)
    mask = _edge(frequency - high_hz, falling=True)
    if low_hz > 0:
        mask = mask * _edge(frequency - low_hz, falling=False)
    return np.fft.irfft(spectrum * mask, size)[: len(audio)]


def _edge(offset_hz: np.ndarray, falling: bool) -> np.ndarray:
    """Raised-cosine step over ±75 Hz around offset 0: 1 -> 0 if `falling`, else 0 -> 1."""
    x = np.clip(offset_hz / _TRANSITION_HZ + 0.5, 0.0, 1.0)
    rising = 0.5 - 0.5 * np.cos(np.pi * x)
    return 1.0 - rising if falling else rising
