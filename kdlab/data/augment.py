"""Make clean synthetic speech harder: speed, silence padding, level changes, a room, noise, a
channel, gain.

Order of operations in `augment`: (maybe) speed-perturb -> pad with silence -> (maybe) a slow
level envelope -> (maybe) reverberate in a room of some size -> (maybe) add noise of one of
`NOISE_TYPES` at an SNR drawn from `snr_db` -> (maybe) band-limit the mixture (telephone or
low-pass) -> random gain (lowered further if the result would clip). The SNR is
10*log10(sum s^2 / sum n^2) over the whole padded utterance, where s is the (reverberant) speech,
n the scaled noise. The signal functions live in `kdlab.data.acoustics` and `kdlab.data.noises`.

All randomness comes from the `numpy.random.Generator` passed in. `AugmentConfig.for_difficulty`
maps one knob in [0, 1] to all the probabilities and ranges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from kdlab.data.acoustics import (
    CHANNELS,
    ROOMS,
    TELEPHONE_BAND_HZ,
    band_limit,
    level_envelope,
    reverberate,
    room_response,
    speed_perturb,
)
from kdlab.data.noises import NOISE_TYPES, make_noise
from kdlab.data.signal import power

_RANGES = ("snr_db", "babble_talkers", "gain_db", "pad_s", "speed_range", "lowpass_hz", "level_change_db")
_PROBABILITIES = ("noise_prob", "reverb_prob", "speed_prob", "channel_prob", "level_change_prob")


@dataclass(frozen=True)
class AugmentConfig:
    """How to degrade an utterance. Probabilities in [0, 1]; ranges are (low, high); weights are
    relative (per `NOISE_TYPES`, per `ROOMS` size)."""

    noise_prob: float = 1.0  # chance that noise is added at all
    snr_db: tuple[float, float] = (5.0, 25.0)
    noise_weights: tuple[float, ...] = (0.25, 0.3, 0.25, 0.1, 0.1)  # white, pink, babble, hum, clicks
    babble_talkers: tuple[int, int] = (3, 6)
    reverb_prob: float = 0.3
    room_weights: tuple[float, ...] = (0.45, 0.35, 0.2)  # small, medium, hall
    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    channel_prob: float = 0.2  # band-limiting: a telephone band or a low-pass, half each
    lowpass_hz: tuple[float, float] = (2500.0, 6000.0)
    level_change_prob: float = 0.3
    level_change_db: tuple[float, float] = (-8.0, 4.0)
    gain_db: tuple[float, float] = (-10.0, 3.0)
    pad_s: tuple[float, float] = (0.05, 0.35)  # silence added before and after the speech

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in _RANGES:
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {getattr(self, name)}")
        for name, kinds in (("noise_weights", NOISE_TYPES), ("room_weights", tuple(ROOMS))):
            weights = getattr(self, name)
            if len(weights) != len(kinds) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(
                    f"{name} must be {len(kinds)} non-negative weights ({', '.join(kinds)}), got {weights}"
                )
        if self.babble_talkers[0] < 1 or self.pad_s[0] < 0 or self.speed_range[0] <= 0:
            raise ValueError("babble_talkers must be >= 1, pad_s >= 0 and speed_range > 0")
        if not (0 < self.lowpass_hz[0] and self.lowpass_hz[1] <= 8000):
            raise ValueError(f"lowpass_hz must lie in (0, 8000], got {self.lowpass_hz}")

    @classmethod
    def for_difficulty(cls, difficulty: float) -> AugmentConfig:
        """0: half the utterances clean, rest at 15..35 dB, no reverb, few channel effects; 0.5: all
        noisy at 5..25 dB, 30 % reverberant; 1: -5..15 dB, 60 % reverberant (more halls), more babble,
        band-limiting and level changes. Speed perturbation (0.9..1.1, half the utterances) at any."""
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        d = float(difficulty)
        return cls(
            noise_prob=min(1.0, 0.5 + d),
            snr_db=(15.0 - 20.0 * d, 35.0 - 20.0 * d),
            noise_weights=(0.25, 0.3, 0.15 + 0.3 * d, 0.1, 0.1),
            reverb_prob=0.6 * d,
            room_weights=(0.5 - 0.2 * d, 0.35, 0.15 + 0.2 * d),
            channel_prob=0.1 + 0.3 * d,
            level_change_prob=0.2 + 0.3 * d,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown AugmentConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Augmented:
    """Result of `augment`: audio (T,) float32 and what was applied (None / False where not)."""

    audio: np.ndarray
    snr_db: float | None
    noise: str | None  # one of NOISE_TYPES
    room: str | None  # one of ROOMS
    gain: float  # linear factor applied to speech + noise
    speed: float | None = None
    channel: str | None = None  # one of CHANNELS
    level_change: bool = False


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

    Every step draws its coin flip (and its parameters) from `rng` in a fixed order. The SNR is
    drawn uniformly from `config.snr_db` and rounded to 0.01 dB before mixing, so the recorded value
    is exact. Babble needs `babble_sources` (other voices' audio).
    """
    config = config or AugmentConfig()
    speech = np.asarray(clean, dtype=np.float64)
    speed = None
    if rng.random() < config.speed_prob:
        speed = round(float(rng.uniform(*config.speed_range)), 2)
        speech = speed_perturb(speech, speed, sample_rate)
    pad = (rng.uniform(*config.pad_s, size=2) * sample_rate).astype(int)
    speech = np.concatenate([np.zeros(pad[0]), speech, np.zeros(pad[1])])
    level_change = bool(rng.random() < config.level_change_prob)
    if level_change:
        speech = speech * level_envelope(len(speech), config.level_change_db, rng)
    room = None
    if rng.random() < config.reverb_prob:
        room = list(ROOMS)[_pick(config.room_weights, rng)]
        speech = reverberate(speech, room_response(ROOMS[room], rng, sample_rate))
    noise_type, snr = None, None
    if rng.random() < config.noise_prob:
        noise_type = NOISE_TYPES[_pick(config.noise_weights, rng)]
        snr = round(float(rng.uniform(*config.snr_db)), 2)
        talkers = int(rng.integers(config.babble_talkers[0], config.babble_talkers[1] + 1))
        noise = make_noise(noise_type, len(speech), rng, babble_sources, talkers, sample_rate)
        speech = mix_at_snr(speech, noise, snr)
    channel = None
    if rng.random() < config.channel_prob:
        channel = CHANNELS[int(rng.integers(len(CHANNELS)))]
        low, high = TELEPHONE_BAND_HZ if channel == "telephone" else (0.0, float(rng.uniform(*config.lowpass_hz)))
        speech = band_limit(speech, low, high, sample_rate)
    gain = 10 ** (float(rng.uniform(*config.gain_db)) / 20)
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak * gain > 0.98:
        gain = 0.98 / peak
    return Augmented((speech * gain).astype(np.float32), snr, noise_type, room, gain, speed, channel, level_change)


def _pick(weights: Sequence[float], rng: np.random.Generator) -> int:
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))
