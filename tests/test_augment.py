"""Augmentation: each degradation does what it says, is fixed by its seed, and the SNR recorded is
the SNR mixed."""

from __future__ import annotations

import numpy as np
import pytest

from kdlab.data.acoustics import ROOMS, band_limit, level_envelope, reverberate, room_response, speed_perturb
from kdlab.data.augment import AugmentConfig, augment, mix_at_snr
from kdlab.data.noises import NOISE_TYPES, click_noise, hum_noise, make_noise
from kdlab.data.signal import power

SR = 16000


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    return np.sin(np.arange(n) * 2 * np.pi * 220 / SR) * rng.uniform(0.2, 0.5, n)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequency = np.fft.rfftfreq(len(audio), 1 / SR)
    return float(spectrum[(frequency >= low) & (frequency < high)].sum())


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_recorded_snr_is_the_snr_of_the_mixed_signal(kind):
    clean = speech_like()
    sources = [np.random.default_rng(i).standard_normal(5000) * np.hanning(5000) for i in range(4)]
    weights = tuple(1.0 if k == kind else 0.0 for k in NOISE_TYPES)
    config = AugmentConfig(
        noise_prob=1.0,
        snr_db=(0.0, 20.0),
        noise_weights=weights,
        reverb_prob=0.0,
        pad_s=(0.0, 0.0),
        speed_prob=0.0,
        channel_prob=0.0,
        level_change_prob=0.0,
    )
    for seed in range(4):
        result = augment(clean, np.random.default_rng(seed), config, sources)
        noise = result.audio.astype(np.float64) / result.gain - clean
        assert result.noise == kind and 0.0 <= result.snr_db <= 20.0
        assert 10 * np.log10(power(clean) / power(noise)) == pytest.approx(result.snr_db, abs=0.05)


EVERYTHING = AugmentConfig(
    speed_prob=1.0,
    level_change_prob=1.0,
    reverb_prob=1.0,
    channel_prob=1.0,
    noise_prob=1.0,
    noise_weights=(0, 0, 0, 1, 1),
)


@pytest.mark.parametrize(
    "name, make",
    [
        ("speed", lambda rng: speed_perturb(speech_like(), rng.uniform(0.9, 1.1))),
        ("level", lambda rng: level_envelope(SR, (-8.0, 4.0), rng)),
        ("room", lambda rng: room_response(ROOMS["medium"], rng)),
        ("hum", lambda rng: hum_noise(SR, rng)),
        ("clicks", lambda rng: click_noise(SR, rng)),
        ("augment", lambda rng: augment(speech_like(), rng, EVERYTHING).audio),
    ],
)
def test_each_augmentation_is_fixed_by_its_seed(name, make):
    a, b, c = make(np.random.default_rng(5)), make(np.random.default_rng(5)), make(np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not (a.shape == c.shape and np.allclose(a, c))


def test_augment_applies_and_records_every_step():
    result = augment(speech_like(), np.random.default_rng(3), EVERYTHING)
    assert result.speed is not None and 0.9 <= result.speed <= 1.1
    assert result.room in ROOMS and result.noise in ("hum", "clicks") and result.channel in ("telephone", "lowpass")
    assert result.level_change and np.abs(result.audio).max() <= 0.98 + 1e-6
    nothing = AugmentConfig(
        speed_prob=0,
        level_change_prob=0,
        reverb_prob=0,
        channel_prob=0,
        noise_prob=0,
        pad_s=(0.0, 0.0),
        gain_db=(0.0, 0.0),
    )
    plain = augment(speech_like(), np.random.default_rng(3), nothing)
    assert (plain.speed, plain.room, plain.noise, plain.channel, plain.level_change) == (None, None, None, None, False)
    assert np.allclose(plain.audio, speech_like(), atol=1e-6)


def test_speed_perturbation_changes_duration_and_pitch_by_the_factor():
    tone = np.sin(2 * np.pi * 200 * np.arange(SR) / SR) * np.hanning(SR)
    fast = speed_perturb(tone, 1.1)
    assert len(fast) == pytest.approx(SR / 1.1, abs=2)
    peak = np.fft.rfftfreq(len(fast), 1 / SR)[np.argmax(np.abs(np.fft.rfft(fast)))]
    assert peak == pytest.approx(220, abs=3)
    assert np.array_equal(speed_perturb(tone, 1.0), tone)


def test_level_envelope_stays_in_its_range_and_moves():
    envelope = level_envelope(SR, (-8.0, 4.0), np.random.default_rng(0))
    db = 20 * np.log10(envelope)
    assert db.min() >= -8.0 - 1e-9 and db.max() <= 4.0 + 1e-9 and db.max() - db.min() > 1.0
    assert np.abs(np.diff(db)).max() <= 12.0 / (SR / 9)  # slow: the whole range over a ninth of the clip at most


def test_bigger_rooms_ring_longer():
    tails = {}
    for name, room in ROOMS.items():
        response = room_response(room, np.random.default_rng(0))
        energy = np.cumsum(response[::-1] ** 2)[::-1]  # Schroeder backward integral
        tails[name] = np.argmax(energy < energy[0] * 1e-3) / SR  # -30 dB time
        assert response[0] == 1.0
    assert tails["small"] < tails["medium"] < tails["hall"]


def test_reverberation_keeps_length_and_power_and_spreads_energy():
    impulse = np.zeros(8000)
    impulse[100] = 1.0
    wet = reverberate(impulse, room_response(ROOMS["small"], np.random.default_rng(0)))
    assert len(wet) == len(impulse) and power(wet) == pytest.approx(power(impulse))
    assert np.count_nonzero(np.abs(wet[101:]) > 1e-3) > 1000  # a decaying tail follows the impulse
    assert np.abs(wet[4000:]).max() < np.abs(wet[101:1000]).max()  # ... and it decays


def test_band_limiting_removes_what_lies_outside_the_band():
    white = np.random.default_rng(0).standard_normal(SR)
    phone = band_limit(white, 300.0, 3400.0)
    assert band_energy(phone, 500, 3000) == pytest.approx(band_energy(white, 500, 3000), rel=0.02)
    assert band_energy(phone, 4000, 8000) < 1e-4 * band_energy(white, 4000, 8000)
    assert band_energy(phone, 0, 150) < 1e-3 * band_energy(white, 0, 150)
    low = band_limit(white, 0.0, 2500.0)
    assert band_energy(low, 0, 150) == pytest.approx(band_energy(white, 0, 150), rel=0.02)
    with pytest.raises(ValueError, match="low_hz < high_hz"):
        band_limit(white, 3000.0, 300.0)


def test_hum_sits_on_the_mains_frequency_and_clicks_are_sparse():
    hum = hum_noise(SR, np.random.default_rng(1))
    peak = np.fft.rfftfreq(SR, 1 / SR)[np.argmax(np.abs(np.fft.rfft(hum)))]
    assert min(abs(peak - 50), abs(peak - 60)) < 2 or peak % 50 < 2 or peak % 60 < 2
    assert power(hum) == pytest.approx(1.0)
    clicks = click_noise(SR, np.random.default_rng(1))
    assert np.count_nonzero(np.abs(clicks) > 1e-3 * np.abs(clicks).max()) < 0.2 * SR
    with pytest.raises(ValueError, match="noise must be one of"):
        make_noise("rain", SR, np.random.default_rng(0))


def test_difficulty_is_a_real_knob_and_configs_are_checked():
    easy, medium, hard = (AugmentConfig.for_difficulty(d) for d in (0.0, 0.5, 1.0))
    assert easy.snr_db[0] > medium.snr_db[0] > hard.snr_db[0] and medium.snr_db == (5.0, 25.0)
    assert easy.reverb_prob < medium.reverb_prob < hard.reverb_prob
    assert easy.channel_prob < hard.channel_prob and easy.room_weights[2] < hard.room_weights[2]
    assert AugmentConfig.from_dict(hard.to_dict()) == hard
    with pytest.raises(ValueError, match="noise_weights must be 5"):
        AugmentConfig(noise_weights=(1, 1, 0))
    with pytest.raises(ValueError, match="babble"):
        augment(speech_like(), np.random.default_rng(0), AugmentConfig(noise_weights=(0, 0, 1, 0, 0)))


def test_mix_at_snr_rejects_silence():
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.ones(10), np.zeros(10), 10.0)
