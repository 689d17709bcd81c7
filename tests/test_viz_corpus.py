"""The corpus figures, tables and synthesis panel show exactly the data they are given."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch

from kdlab.data.espeak import synthesize
from kdlab.data.features import compute_fbank
from kdlab.data.flite import flite_available
from kdlab.data.manifest import Utterance, read_manifest, write_manifest
from kdlab.data.voices import FLITE_VOICES
from kdlab.viz import corpus_figures as cf
from kdlab.viz.corpus_panel import SynthesisPanel, SynthesisSettings

SR = 16000


def _snr_db(rendered) -> float:
    """Measured SNR of a render: speech power over the power of what was added to it."""
    speech = rendered.speech.astype(np.float64)
    noise = rendered.audio.astype(np.float64) - speech
    return 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """Three splits written to and read back from JSONL manifests; some utterances are clean."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("manifests")
    splits = {}
    for split, speakers, count in (("train", 5, 40), ("dev", 2, 9), ("test", 3, 7)):
        utterances = [
            Utterance(
                id=f"{split}-{i}",
                audio=str(folder / f"{split}-{i}.wav"),
                text="some words here",
                speaker=f"{split}_spk{i % speakers}",
                duration=round(float(rng.uniform(0.8, 6.0)), 4),
                snr=None if i % 4 == 0 else round(float(rng.uniform(0, 30)), 2),
            )
            for i in range(count)
        ]
        write_manifest(folder / f"{split}.jsonl", utterances)
        splits[split] = read_manifest(folder / f"{split}.jsonl")
    return splits


def test_waveform_figure_plots_every_sample_against_time():
    wave = np.random.default_rng(1).uniform(-1, 1, 1234).astype(np.float32)
    figure = cf.waveform_figure(torch.from_numpy(wave), SR, title="a title")
    trace = figure.data[0]
    assert np.array_equal(trace.y, wave)
    assert trace.x0 == 0 and trace.dx == pytest.approx(1 / SR)
    assert figure.layout.title.text == "a title"
    with pytest.raises(ValueError, match=r"one channel \(T,\), got shape \(2, 10\)"):
        cf.waveform_figure(np.zeros((2, 10)), SR)


def test_spectrogram_figure_shows_the_fbank_with_mel_bins_on_y():
    wave = torch.from_numpy(np.random.default_rng(2).uniform(-0.5, 0.5, 8000).astype(np.float32))
    fbank = compute_fbank(wave)
    trace = cf.spectrogram_figure(fbank, title="spec").data[0]
    assert trace.z.shape == (80, fbank.shape[0])
    assert np.array_equal(trace.z, fbank.numpy().T)
    assert trace.dx == pytest.approx(0.01)
    with pytest.raises(ValueError, match="frames, n_mels"):
        cf.spectrogram_figure(np.zeros(80))


def test_speaker_table_accounts_for_every_utterance_and_second(manifests):
    table = cf.speaker_table(manifests)
    assert list(table["split"].unique()) == ["train", "dev", "test"]
    for split, utterances in manifests.items():
        rows = table[table["split"] == split]
        assert sorted(rows["speaker"]) == sorted({u.speaker for u in utterances})
        assert rows["utterances"].sum() == len(utterances)
        assert rows["minutes"].sum() * 60 == pytest.approx(sum(u.duration for u in utterances))
        for row in rows.itertuples():
            mine = [u for u in utterances if u.speaker == row.speaker]
            snrs = [u.snr for u in mine if u.snr is not None]
            assert row.minutes * 60 == pytest.approx(sum(u.duration for u in mine))
            assert row.mean_snr_db == pytest.approx(np.mean(snrs)) if snrs else np.isnan(row.mean_snr_db)


def test_split_table_totals_match_the_manifests(manifests):
    table = cf.split_table(manifests)
    for split, utterances in manifests.items():
        seconds = sum(u.duration for u in utterances)
        assert table.loc[split, "speakers"] == len({u.speaker for u in utterances})
        assert table.loc[split, "utterances"] == len(utterances)
        assert table.loc[split, "hours"] * 3600 == pytest.approx(seconds)
        assert table.loc[split, "mean_seconds"] == pytest.approx(seconds / len(utterances))


def test_duration_histogram_has_one_trace_of_durations_per_split(manifests):
    figure = cf.duration_histogram(manifests)
    assert [trace.name for trace in figure.data] == list(manifests)
    for trace, utterances in zip(figure.data, manifests.values()):
        assert np.allclose(trace.x, [u.duration for u in utterances])


def test_tables_refuse_an_empty_corpus():
    with pytest.raises(ValueError, match="at least one utterance"):
        cf.speaker_table({"train": []})


@pytest.fixture
def panel():
    return SynthesisPanel(SynthesisSettings(text="seven green apples", noise="white", snr_db=20.0), seed=3)


def test_panel_shows_and_plays_what_it_synthesised(panel):
    settings = panel.settings()
    rendered = panel.rendered
    assert np.array_equal(rendered.clean, synthesize("seven green apples", settings.voice()))
    assert np.array_equal(panel.figure.data[0].y, rendered.audio)
    assert panel.figure.data[0].dx == pytest.approx(1 / SR)
    assert np.allclose(panel.figure.data[1].z, compute_fbank(torch.from_numpy(rendered.audio)).numpy().T)
    played, rate = soundfile.read(io.BytesIO(panel.audio.value), dtype="float32")
    assert rate == SR and np.allclose(played, rendered.audio, atol=1 / 32768 + 1e-6)
    assert _snr_db(rendered) == pytest.approx(20.0, abs=0.01)
    assert "white noise at 20 dB SNR" in panel.status.value


def test_moving_the_snr_slider_updates_the_figure_in_place(panel):
    figure, before = panel.figure, panel.figure.data[0].y.copy()
    panel.snr.value = 5.0  # what dragging the slider in the browser does
    assert panel.figure is figure
    after = figure.data[0].y
    assert not np.allclose(after, before)
    assert np.array_equal(after, panel.rendered.audio)
    assert _snr_db(panel.rendered) == pytest.approx(5.0, abs=0.01)
    assert np.allclose(figure.data[1].z, compute_fbank(torch.from_numpy(panel.rendered.audio)).numpy().T)
    panel.update()  # the callback is deterministic: same settings, same signal
    assert np.array_equal(figure.data[0].y, after)


@pytest.mark.parametrize("noise", ["pink", "babble", "hum", "clicks"])
def test_other_noise_kinds_are_mixed_at_the_chosen_snr(panel, noise):
    white = panel.rendered.audio
    panel.noise.value = noise
    assert not np.array_equal(panel.rendered.audio, white)
    assert np.array_equal(panel.figure.data[0].y, panel.rendered.audio)
    assert _snr_db(panel.rendered) == pytest.approx(20.0, abs=0.01)


def test_no_noise_plays_the_clean_voice_and_disables_the_snr_slider(panel):
    panel.noise.value = "none"
    rendered = panel.rendered
    gain = float(np.dot(rendered.audio, rendered.clean) / np.dot(rendered.clean, rendered.clean))
    assert 0 < gain <= 1 and np.allclose(rendered.audio, gain * rendered.clean, atol=1e-6)
    assert panel.snr.disabled and "clean" in panel.status.value


def test_voice_room_and_channel_controls_change_the_signal(panel):
    panel.noise.value = "none"
    dry = panel.rendered.audio
    panel.room.value = "hall"
    assert len(panel.rendered.audio) == len(dry) and not np.allclose(panel.rendered.audio, dry)
    assert "hall room" in panel.status.value
    wide = panel.rendered.audio
    panel.channel.value = "telephone"
    spectrum = np.abs(np.fft.rfft(panel.rendered.audio)) ** 2
    above = np.fft.rfftfreq(len(panel.rendered.audio), 1 / SR) > 3700
    wide_spectrum = np.abs(np.fft.rfft(wide)) ** 2
    assert spectrum[above].sum() / spectrum.sum() < 0.01 * wide_spectrum[above].sum() / wide_spectrum.sum()
    panel.rate.value = 300
    assert len(panel.rendered.audio) < len(dry)  # faster speech is shorter
    assert np.array_equal(panel.figure.data[0].y, panel.rendered.audio)


@pytest.mark.skipif(not flite_available(), reason="flite is not installed")
def test_switching_the_engine_offers_its_voices_and_renders_once(panel, monkeypatch):
    calls = []
    monkeypatch.setattr(panel, "update", lambda: calls.append(panel.settings()) or SynthesisPanel.update(panel))
    espeak_audio = panel.rendered.audio
    panel.engine.value = "flite"
    assert tuple(panel.variant.options) == tuple(FLITE_VOICES) and panel.accent.disabled
    assert len(calls) == 1 and calls[0].voice().engine == "flite"
    assert panel.status.value.startswith("flite_kal_") and not np.array_equal(panel.rendered.audio, espeak_audio)
    assert np.array_equal(panel.figure.data[0].y, panel.rendered.audio)
    panel.engine.value = "espeak"
    assert not panel.accent.disabled and "m3" in panel.variant.options


def test_unusable_sentence_is_reported_and_keeps_the_last_figure(panel):
    before = panel.figure.data[0].y.copy()
    panel.text.value = "1 2 3"
    assert "cannot synthesise" in panel.status.value and "letters" in panel.status.value
    assert np.array_equal(panel.figure.data[0].y, before)


def test_synthesis_settings_round_trip_and_validation():
    settings = SynthesisSettings(
        text="hello there",
        accent="en-gb-x-rp",
        variant="f2",
        rate=150,
        pitch=60,
        noise="pink",
        snr_db=3.0,
        room="small",
        channel="telephone",
    )
    assert SynthesisSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="noise must be one of"):
        SynthesisSettings(noise="traffic")
    with pytest.raises(ValueError, match="unknown SynthesisSettings field"):
        SynthesisSettings.from_dict({"volume": 3})
