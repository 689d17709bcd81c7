"""Noise signals to mix under speech, each `(length,)` float64 of unit power (babble: its talkers
at unit power each), every random choice taken from the `numpy.random.Generator` passed in.

white and pink (1/f) are broadband; babble is other voices of the split; hum is mains
interference (50 or 60 Hz and its harmonics, drifting slightly); clicks are sparse short bursts
(a crackling line or a keyboard).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdlab.data.signal import power

NOISE_TYPES = ("white", "pink", "babble", "hum", "clicks")


def white_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """(length,) Gaussian white noise, unit variance."""
    return rng.standard_normal(length)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """(length,) 1/f noise (power falls 3 dB per octave), unit variance."""
    size = 1 << max(length - 1, 1).bit_length()  # power-of-two FFT, then cut to length
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequency = np.arange(len(spectrum), dtype=np.float64)
    frequency[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(frequency), size)[:length]
    return _unit(noise)


def babble_noise(length: int, sources: Sequence[np.ndarray], talkers: int, rng: np.random.Generator) -> np.ndarray:
    """(length,) sum of `talkers` random speech sources, each looped from a random offset and
    normalised to unit power, so the talkers are equally loud."""
    if not sources:
        raise ValueError(
            "babble noise needs babble_sources (other synthesized voices); pass some or set the babble weight to 0"
        )
    mix = np.zeros(length)
    for index in rng.integers(0, len(sources), size=talkers):
        source = np.asarray(sources[index], dtype=np.float64)
        if power(source) == 0:
            continue
        offset = int(rng.integers(0, len(source)))
        looped = np.resize(np.roll(source, -offset), length)
        mix += looped / np.sqrt(power(looped) + 1e-20)
    return mix


def hum_noise(length: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """(length,) mains hum: a 50 or 60 Hz fundamental and harmonics 2..8 (random amplitudes falling
    roughly as 1/k, random phases), the frequency drifting by up to ±0.5 % over the clip."""
    frequency = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.005, 0.005) * np.linspace(0, 1, length))
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    hum = np.zeros(length)
    for k in range(1, 9):
        hum += rng.uniform(0.3, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return _unit(hum)


def click_noise(
    length: int, rng: np.random.Generator, sample_rate: int = 16000, per_second: tuple[float, float] = (2.0, 8.0)
) -> np.ndarray:
    """(length,) clicks at random times (`per_second` on average), each an impulse followed by a
    1..5 ms decaying noise burst of random sign and loudness."""
    clicks = np.zeros(length)
    count = int(rng.poisson(rng.uniform(*per_second) * length / sample_rate)) or 1
    for start in rng.integers(0, max(length, 1), size=count):
        burst = int(rng.uniform(0.001, 0.005) * sample_rate)
        shape = rng.standard_normal(burst) * np.exp(-np.arange(burst) / max(burst / 4, 1))
        shape[0] = rng.choice([-1.0, 1.0]) * 3.0
        end = min(length, start + burst)
        clicks[start:end] += rng.uniform(0.3, 1.0) * shape[: end - start]
    return _unit(clicks)


def make_noise(
    kind: str,
    length: int,
    rng: np.random.Generator,
    babble_sources: Sequence[np.ndarray] = (),
    talkers: int = 4,
    sample_rate: int = 16000,
) -> np.ndarray:
    """(length,) noise of `kind` (one of `NOISE_TYPES`)."""
    if kind == "white":
        return white_noise(length, rng)
    if kind == "pink":
        return pink_noise(length, rng)
    if kind == "babble":
        return babble_noise(length, babble_sources, talkers, rng)
    if kind == "hum":
        return hum_noise(length, rng, sample_rate)
    if kind == "clicks":
        return click_noise(length, rng, sample_rate)
    raise ValueError(f"noise must be one of {NOISE_TYPES}, got {kind!r}")


def _unit(noise: np.ndarray) -> np.ndarray:
    return noise / np.sqrt(max(power(noise), 1e-20))
