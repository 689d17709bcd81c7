"""Make clean synthetic speech harder: silence padding, reverberation, additive noise, gain.

Order of operations in `augment`: pad with silence -> (maybe) reverberate -> (maybe) add
white, pink or babble noise at an SNR drawn from `snr_db` -> random gain (lowered further
if the result would clip). The SNR is 10*log10(sum s^2 / sum n^2) over the whole padded
utterance, where s is the (reverberant) speech, n the scaled noise.

All randomness comes from the `numpy.random.Generator` passed in. `AugmentConfig.for_difficulty`
maps one knob in [0, 1] to SNR range, noise and reverberation probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

NOISE_TYPES = ("white", "pink", "babble")


@dataclass(frozen=True)
class AugmentConfig:
    """How to degrade an utterance. Probabilities in [0, 1]; ranges are (low, high)."""

    noise_prob: float = 1.0  # chance that noise is added at all
    snr_db: tuple[float, float] = (5.0, 25.0)
    noise_weights: tuple[float, float, float] = (0.3, 0.35, 0.35)  # white, pink, babble
    babble_talkers: tuple[int, int] = (3, 6)
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.6)
    gain_db: tuple[float, float] = (-10.0, 3.0)
    pad_s: tuple[float, float] = (0.05, 0.35)  # silence added before and after the speech

    def __post_init__(self) -> None:
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("snr_db", "babble_talkers", "rt60_s", "gain_db", "pad_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {getattr(self, name)}")
        if len(self.noise_weights) != 3 or min(self.noise_weights) < 0 or sum(self.noise_weights) <= 0:
            raise ValueError(f"noise_weights must be 3 non-negative weights (white, pink, babble), got {self.noise_weights}")
        if self.babble_talkers[0] < 1 or self.rt60_s[0] <= 0 or self.pad_s[0] < 0:
            raise ValueError("babble_talkers must be >= 1, rt60_s > 0 and pad_s >= 0")

    @classmethod
    def for_difficulty(cls, difficulty: float) -> "AugmentConfig":
        """0: half the utterances clean, rest at 15..35 dB, no reverb; 0.5: all noisy at 5..25 dB,
        30 % reverberant; 1: -5..15 dB, 60 % reverberant, more babble."""
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        d = float(difficulty)
        return cls(
            noise_prob=min(1.0, 0.5 + d),
            snr_db=(15.0 - 20.0 * d, 35.0 - 20.0 * d),
            noise_weights=(0.3, 0.35, 0.2 + 0.3 * d),
            reverb_prob=0.6 * d,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown AugmentConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Augmented:
    """Result of `augment`: audio (T,) float32, the SNR used (None if clean), what was applied."""

    audio: np.ndarray
    snr_db: float | None
    noise: str | None
    reverb: bool
    gain: float  # linear factor applied to speech + noise


def power(x: np.ndarray) -> float:
    """Mean square of x (float64)."""
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


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
    return noise / np.sqrt(max(power(noise), 1e-20))


def babble_noise(length: int, sources: Sequence[np.ndarray], talkers: int, rng: np.random.Generator) -> np.ndarray:
    """(length,) sum of `talkers` random speech sources, each looped from a random offset and
    normalised to unit power, so the talkers are equally loud."""
    if not sources:
        raise ValueError("babble noise needs babble_sources (other synthesized voices); pass some or set the babble weight to 0")
    mix = np.zeros(length)
    for index in rng.integers(0, len(sources), size=talkers):
        source = np.asarray(sources[index], dtype=np.float64)
        if power(source) == 0:
            continue
        offset = int(rng.integers(0, len(source)))
        looped = np.resize(np.roll(source, -offset), length)
        mix += looped / np.sqrt(power(looped) + 1e-20)
    return mix


def reverberate(audio: np.ndarray, rt60: float, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Convolve with a synthetic room response: direct path + exponentially decaying noise tail
    (60 dB down after `rt60` seconds). Output (T,) has the input's length and power."""
    length = max(1, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    response = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60) * 0.3
    response[0] = 1.0
    n = len(audio) + length - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(response, size), size)[: len(audio)]
    return wet * np.sqrt(power(audio) / max(power(wet), 1e-20))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that 10*log10(power(speech)/power(scaled noise)) == snr_db. Shapes (T,)."""
    if speech.shape != noise.shape:
        raise ValueError(f"speech and noise must have the same shape, got {speech.shape} and {noise.shape}")
    if power(noise) == 0 or power(speech) == 0:
        raise ValueError("cannot mix at an SNR with silent speech or silent noise")
    scale = np.sqrt(power(speech) / (power(noise) * 10 ** (snr_db / 10)))
    return speech + scale * noise


def augment(
    clean: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
    babble_sources: Sequence[np.ndarray] = (),
    sample_rate: int = 16000,
) -> Augmented:
    """Degrade `clean` speech (T,) float as described in the module docstring.

    The SNR is drawn uniformly from `config.snr_db` and rounded to 0.01 dB before mixing,
    so the recorded value is exact. Babble needs `babble_sources` (other voices' audio).
    """
    config = config or AugmentConfig()
    pad = (rng.uniform(*config.pad_s, size=2) * sample_rate).astype(int)
    speech = np.concatenate([np.zeros(pad[0]), np.asarray(clean, dtype=np.float64), np.zeros(pad[1])])
    reverb = bool(rng.random() < config.reverb_prob)
    if reverb:
        speech = reverberate(speech, float(rng.uniform(*config.rt60_s)), rng, sample_rate)
    noise_type, snr = None, None
    if rng.random() < config.noise_prob:
        weights = np.asarray(config.noise_weights, dtype=np.float64)
        noise_type = NOISE_TYPES[int(rng.choice(3, p=weights / weights.sum()))]
        snr = round(float(rng.uniform(*config.snr_db)), 2)
        if noise_type == "white":
            noise = white_noise(len(speech), rng)
        elif noise_type == "pink":
            noise = pink_noise(len(speech), rng)
        else:
            talkers = int(rng.integers(config.babble_talkers[0], config.babble_talkers[1] + 1))
            noise = babble_noise(len(speech), babble_sources, talkers, rng)
        speech = mix_at_snr(speech, noise, snr)
    gain = 10 ** (float(rng.uniform(*config.gain_db)) / 20)
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak * gain > 0.98:
        gain = 0.98 / peak
    return Augmented((speech * gain).astype(np.float32), snr, noise_type, reverb, gain)
