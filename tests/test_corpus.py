"""The embedded corpus: grammar, voices, espeak synthesis, builder and CLI (augmentation:
test_augment.py; the second engine and the held-out splits: test_corpus_engines.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kdlab.data.corpus import SPLITS, CorpusConfig, build_corpus, corpus_summary, is_complete, profile_config
from kdlab.data.espeak import SAMPLE_RATE, synthesize
from kdlab.data.grammar import default_grammar, number_words, split_sentences, vocabulary
from kdlab.data.manifest import read_manifest
from kdlab.data.signal import resample
from kdlab.data.voices import ACCENTS, Voice, VoiceSpace, make_speakers

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = set("abcdefghijklmnopqrstuvwxyz' ")


def run_data_cli(out: Path, seed: int, workers: int = 2) -> None:
    command = [
        sys.executable,
        "-m",
        "kdlab",
        "data",
        "--profile",
        "tiny",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "vocabulary" in done.stdout and "train" in done.stdout


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The tiny corpus, seed 3, built once through the CLI with 2 workers."""
    out = tmp_path_factory.mktemp("corpus") / "A"
    run_data_cli(out, seed=3, workers=2)
    return out


def manifests(folder: Path) -> dict[str, list]:
    return {split: read_manifest(folder / f"{split}.jsonl") for split in SPLITS}


# ---------------------------------------------------------------- corpus, CLI, determinism


def test_same_seed_is_identical_in_any_folder_and_worker_count_other_seed_differs(tiny_corpus, tmp_path):
    run_data_cli(tmp_path / "B", seed=3, workers=1)
    run_data_cli(tmp_path / "C", seed=4, workers=2)
    for split in SPLITS:
        a = (tiny_corpus / f"{split}.jsonl").read_bytes()
        assert a == (tmp_path / "B" / f"{split}.jsonl").read_bytes()
        assert a != (tmp_path / "C" / f"{split}.jsonl").read_bytes()
    for utt in read_manifest(tiny_corpus / "dev.jsonl"):
        same = tmp_path / "B" / Path(utt.audio).relative_to(tiny_corpus)
        assert np.array_equal(soundfile.read(utt.audio, dtype="int16")[0], soundfile.read(same, dtype="int16")[0])
    first = "audio/train/train-000000.wav"
    a, b, c = (
        soundfile.read(folder / first, dtype="int16")[0] for folder in (tiny_corpus, tmp_path / "B", tmp_path / "C")
    )
    assert np.array_equal(a, b) and not (len(a) == len(c) and np.array_equal(a, c))


def test_splits_are_speaker_and_sentence_disjoint(tiny_corpus):
    data = manifests(tiny_corpus)
    speakers = {split: {u.speaker for u in utts} for split, utts in data.items()}
    texts = {split: {u.text for u in utts} for split, utts in data.items()}
    assert len(speakers["train"]) >= 40 and len(speakers["dev"]) >= 8 and len(speakers["test"]) >= 8
    for held_out in ("dev", "test"):
        assert not speakers[held_out] & speakers["train"]
        assert not texts[held_out] & texts["train"]
    assert not speakers["dev"] & speakers["test"] and not texts["dev"] & texts["test"]
    info = json.loads((tiny_corpus / "corpus.json").read_text())
    voices = [Voice.from_dict({k: v for k, v in d.items() if k != "name"}) for s in SPLITS for d in info["speakers"][s]]
    pairs = [(v.accent, v.variant) for v in voices if v.engine == "espeak"]
    assert len(pairs) == len(set(pairs)), "an accent x variant pair is shared by two speakers"
    assert len(set(voices)) == len(voices), "a flite (voice, rate, pitch) is shared by two speakers"


def test_manifest_audio_and_summary_agree(tiny_corpus):
    data = manifests(tiny_corpus)
    config = profile_config("tiny", 3)
    low, high = config.augment_config().snr_db
    for split, utts in data.items():
        assert len(utts) == config.utterances(split)
        for utt in utts:
            assert set(utt.text) <= ALLOWED and 3 <= len(utt.text.split()) <= 15
            assert utt.snr is None or low <= utt.snr <= high
    utt = data["test"][0]
    info = soundfile.info(utt.audio)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert info.frames / SAMPLE_RATE == pytest.approx(utt.duration, abs=1e-3)
    summary = corpus_summary(tiny_corpus)
    hours = sum(u.duration for u in data["train"]) / 3600
    assert summary["splits"]["train"]["hours"] == pytest.approx(hours, abs=1e-3)
    assert summary["splits"]["dev"]["speakers"] == len({u.speaker for u in data["dev"]})
    assert summary["vocabulary"] == len({w for utts in data.values() for u in utts for w in u.text.split()})
    assert 2.0 <= summary["splits"]["train"]["mean_seconds"] <= 6.0


def test_rebuild_is_skipped_when_config_unchanged(tiny_corpus):
    config = profile_config("tiny", 3)
    wav = tiny_corpus / "audio" / "train" / "train-000000.wav"
    before = wav.stat().st_mtime_ns
    start = time.perf_counter()
    assert build_corpus(config, tiny_corpus, progress=False) == tiny_corpus
    assert time.perf_counter() - start < 1.0
    assert wav.stat().st_mtime_ns == before
    assert is_complete(tiny_corpus, config)
    assert not is_complete(tiny_corpus, replace(config, difficulty=0.9))
    assert not is_complete(tiny_corpus, profile_config("tiny", 4))


def test_build_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no kdlab corpus"):
        build_corpus(profile_config("tiny", 0), tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_config_round_trip_and_digest():
    config = replace(profile_config("default", 7), snr_db=(0.0, 10.0), reverb_prob=0.5)
    again = CorpusConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.digest() == config.digest()
    assert again.augment_config().snr_db == (0.0, 10.0) and again.augment_config().reverb_prob == 0.5
    assert profile_config("default", 0).digest() != profile_config("default", 1).digest()
    with pytest.raises(ValueError, match="unknown CorpusConfig"):
        CorpusConfig.from_dict({"sead": 1})
    with pytest.raises(ValueError, match="unknown corpus profile"):
        profile_config("huge")


def test_default_profile_sizes_meet_the_targets():
    # measured mean utterance length is ~2.7 s; keep >= 3 h train and >= 15 min dev/test at 2.5 s
    default, full = profile_config("default"), profile_config("full")
    assert default.train_utterances * 2.5 >= 3 * 3600
    assert min(default.dev_utterances, default.test_utterances) * 2.5 >= 15 * 60
    assert full.train_utterances * 2.5 >= 30 * 3600
    for config in (profile_config("tiny"), default, full):
        assert config.train_speakers >= 40 and min(config.dev_speakers, config.test_speakers) >= 8


# ---------------------------------------------------------------- grammar


def test_grammar_vocabulary_and_sentence_lengths():
    words = vocabulary()
    assert len(words) >= 800
    sentences = split_sentences({"test": 100, "dev": 100, "train": 2000}, seed=0)
    used = {w for texts in sentences.values() for t in texts for w in t.split()}
    assert used <= words and len(used) >= 800
    lengths = [len(t.split()) for texts in sentences.values() for t in texts]
    assert min(lengths) >= 3 and max(lengths) <= 15 and 5 <= np.mean(lengths) <= 10
    assert all(set(t) <= ALLOWED and "  " not in t for texts in sentences.values() for t in texts)
    assert number_words(42) == "forty two" and number_words(13) == "thirteen"


def test_a_smaller_lexicon_draws_sentences_from_fewer_words():
    grammar = default_grammar()
    quarter = grammar.with_lexicon(0.25)
    assert grammar.with_lexicon(1.0) is grammar
    for name, values in grammar.slots.items():
        assert quarter.slots[name] == values[: max(1, -(-len(values) // 4))]
    counts = {"test": 50, "dev": 50, "train": 1000}
    full = {w for texts in split_sentences(counts, 0).values() for t in texts for w in t.split()}
    small = {w for texts in split_sentences(counts, 0, grammar=quarter).values() for t in texts for w in t.split()}
    assert small < grammar.vocabulary() and len(small) < 0.6 * len(full)
    with pytest.raises(ValueError, match="lexicon"):
        grammar.with_lexicon(0.0)
    with pytest.raises(ValueError, match="lexicon_fraction"):
        CorpusConfig(lexicon_fraction=1.5)
    assert replace(profile_config("default"), lexicon_fraction=0.5).digest() != profile_config("default").digest()


def test_split_sentences_are_disjoint_and_seeded():
    counts = {"test": 50, "dev": 50, "train": 500}
    a, b, c = split_sentences(counts, 1), split_sentences(counts, 1), split_sentences(counts, 2)
    assert a == b and a != c
    all_texts = [t for texts in a.values() for t in texts]
    assert len(all_texts) == len(set(all_texts)) == 600
    short = split_sentences({"train": 50}, 1, min_words=3, max_words=4)["train"]
    assert all(3 <= len(t.split()) <= 4 for t in short)


# ---------------------------------------------------------------- voices and synthesis


def test_make_speakers_is_disjoint_seeded_and_bounded():
    space = VoiceSpace.for_difficulty(0.5)
    speakers = make_speakers({"test": 8, "dev": 8, "train": 40}, seed=0, space=space)
    assert speakers == make_speakers({"test": 8, "dev": 8, "train": 40}, seed=0, space=space)
    assert speakers != make_speakers({"test": 8, "dev": 8, "train": 40}, seed=1, space=space)
    voices = [v for split in speakers.values() for v in split]
    assert len({(v.accent, v.variant) for v in voices}) == len(voices) == 56
    assert len({v.name for v in voices}) == 56
    assert all(space.rate_range[0] <= v.rate <= space.rate_range[1] and v.accent in space.accents for v in voices)
    assert {v.accent for v in speakers["dev"]} == set(space.accents)  # accents dealt round-robin
    with pytest.raises(ValueError, match="accent x variant pairs"):
        make_speakers({"train": 10_000}, seed=0)
    with pytest.raises(ValueError, match="rate"):
        Voice("en-us", "m1", rate=20)
    assert set(VoiceSpace.for_difficulty(1.0).accents) == set(ACCENTS)


def test_synthesize_gives_16k_float_audio_that_depends_on_text_and_voice():
    voice = Voice("en-us", "m3", rate=170, pitch=50)
    short = synthesize("hello there", voice)
    long = synthesize("hello there my friend we walked twenty miles to the old harbour today", voice)
    assert short.dtype == np.float32 and short.ndim == 1
    assert 0.3 < len(short) / SAMPLE_RATE < 2.0
    assert len(long) > 2.5 * len(short)
    assert 0.05 < np.abs(long).max() <= 1.0
    assert np.array_equal(short, synthesize("hello there", voice))
    other = synthesize("hello there", Voice("en-gb-scotland", "f2", rate=170, pitch=50))
    assert not (len(other) == len(short) and np.allclose(other, short, atol=1e-3))
    slow = synthesize("hello there", Voice("en-us", "m3", rate=110, pitch=50))
    assert len(slow) > 1.2 * len(short)
    with pytest.raises(ValueError, match="no voice variant 'no_such_variant'"):
        synthesize("hello", Voice("en-us", "no_such_variant"))
    with pytest.raises(ValueError, match="no voice 'xx-nowhere"):
        synthesize("hello", Voice("xx-nowhere", "m3"))


def test_resample_keeps_a_tone_and_the_duration():
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))
    out = resample(tone, 22050, 16000)
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * np.hanning(16000)
    assert np.abs(out - expected)[2000:-2000].max() < 0.01


# ---------------------------------------------------------------- voice space


def test_difficulty_changes_voice_space():
    easy, hard = VoiceSpace.for_difficulty(0.0), VoiceSpace.for_difficulty(1.0)
    assert len(easy.accents) < len(hard.accents) and len(easy.variants) < len(hard.variants)
    assert easy.rate_range[1] - easy.rate_range[0] < hard.rate_range[1] - hard.rate_range[0]
