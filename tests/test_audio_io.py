"""Robust audio loading: resampling, downmixing, and a clear AudioError for each kind of bad file."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kdlab.data.audio_io import AudioError, audio_duration, load_audio


def tone(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(wave: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return float(spectrum.argmax()) * sample_rate / len(wave)


def test_mono_16k_float_wav_is_returned_unchanged(tmp_path):
    samples = tone(0.3, 16000)
    sf.write(tmp_path / "a.wav", samples, 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "a.wav")
    assert wave.dtype == torch.float32 and wave.shape == (len(samples),)
    assert torch.equal(wave, torch.from_numpy(samples))


@pytest.mark.parametrize("sample_rate", [8000, 44100])
def test_other_sample_rates_are_resampled_to_16k(tmp_path, sample_rate):
    sf.write(tmp_path / "a.flac", tone(0.5, sample_rate), sample_rate)
    wave = load_audio(tmp_path / "a.flac")
    assert abs(len(wave) - 8000) <= 1  # 0.5 s at 16 kHz
    assert dominant_frequency(wave, 16000) == pytest.approx(440.0, abs=4.0)


def test_several_channels_are_averaged(tmp_path):
    left, right = tone(0.2, 16000, 300.0), tone(0.2, 16000, 700.0, amplitude=0.25)
    three = np.stack([left, right, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "multi.wav", three, 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "multi.wav")
    assert wave.shape == (len(left),)
    assert torch.allclose(wave, torch.from_numpy((left + right) / 3), atol=1e-6)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(AudioError, match="nowhere.wav.*not found") as info:
        load_audio(tmp_path / "nowhere.wav")
    assert info.value.reason == "missing_audio" and isinstance(info.value, ValueError)


def test_zero_byte_file_is_empty(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav.*0 bytes") as info:
        load_audio(tmp_path / "empty.wav")
    assert info.value.reason == "empty_audio"


def test_valid_header_without_samples_is_empty(tmp_path):
    sf.write(tmp_path / "nothing.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="nothing.wav.*0 samples") as info:
        load_audio(tmp_path / "nothing.wav")
    assert info.value.reason == "empty_audio"
    with pytest.raises(AudioError, match="0 samples"):
        audio_duration(tmp_path / "nothing.wav")


def test_wav_cut_in_its_data_is_truncated(tmp_path):
    sf.write(tmp_path / "full.wav", tone(0.5, 16000), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="cut.wav.*truncated") as info:
        load_audio(tmp_path / "cut.wav")
    assert info.value.reason == "truncated_audio"


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_file_cut_in_its_header_is_corrupt(tmp_path, suffix):
    sf.write(tmp_path / f"full{suffix}", tone(0.5, 16000), 16000)
    (tmp_path / f"cut{suffix}").write_bytes((tmp_path / f"full{suffix}").read_bytes()[:20])
    with pytest.raises(AudioError, match=f"cut{suffix}.*corrupt or truncated") as info:
        load_audio(tmp_path / f"cut{suffix}")
    assert info.value.reason == "corrupt_audio"


def test_flac_cut_in_its_data_is_corrupt(tmp_path):
    sf.write(tmp_path / "full.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="cut.flac") as info:
        load_audio(tmp_path / "cut.flac")
    assert info.value.reason in ("corrupt_audio", "truncated_audio")


def test_text_renamed_to_wav_is_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("these are my notes, not a recording\n" * 5)
    with pytest.raises(AudioError, match="notes.wav.*not an audio file") as info:
        load_audio(tmp_path / "notes.wav")
    assert info.value.reason == "not_audio"


def test_nan_samples_are_corrupt(tmp_path):
    samples = tone(0.1, 16000)
    samples[10] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN") as info:
        load_audio(tmp_path / "nan.wav")
    assert info.value.reason == "corrupt_audio"


def test_audio_duration_reads_the_header(tmp_path):
    sf.write(tmp_path / "a.flac", tone(0.75, 22050), 22050)
    assert audio_duration(tmp_path / "a.flac") == pytest.approx(0.75, abs=1 / 22050)
    with pytest.raises(AudioError, match="missing.flac"):
        audio_duration(Path(tmp_path / "missing.flac"))
