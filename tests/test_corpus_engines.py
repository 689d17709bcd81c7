"""The second synthesis engine (flite) and the held-out test splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kdlab.data.corpus import (
    ESPEAK_UNSEEN_VOICES,
    HELD_OUT_SPLITS,
    SPLITS,
    ensure_corpus,
    profile_config,
    with_available_engines,
)
from kdlab.data.flite import flite_available
from kdlab.data.manifest import read_manifest
from kdlab.data.synthesis import synthesize
from kdlab.data.voices import Voice, VoiceSpace, make_speakers

ROOT = Path(__file__).resolve().parents[1]
needs_flite = pytest.mark.skipif(not flite_available(), reason="flite is not installed (make test installs it as root)")


def corpus_voices(folder: Path, split: str) -> list[Voice]:
    info = json.loads((folder / "corpus.json").read_text())
    return [Voice.from_dict({k: v for k, v in d.items() if k != "name"}) for d in info["speakers"][split]]


@needs_flite
def test_flite_speaks_16k_audio_that_follows_voice_rate_and_pitch():
    voice = Voice.flite("awb", rate=170, pitch=50)
    audio = synthesize("hello there my friend", voice)
    assert audio.dtype == np.float32 and audio.ndim == 1 and 0.05 < np.abs(audio).max() <= 1.0
    assert np.array_equal(audio, synthesize("hello there my friend", voice))
    slow = synthesize("hello there my friend", Voice.flite("awb", rate=110, pitch=50))
    assert len(slow) > 1.3 * len(audio)
    high = synthesize("hello there my friend", Voice.flite("awb", rate=170, pitch=90))
    assert len(high) == pytest.approx(len(audio), rel=0.05) and not np.allclose(high[: len(audio)], audio[: len(high)])
    narrow = synthesize("hello there", Voice.flite("kal"))  # an 8 kHz voice, resampled
    spectrum = np.abs(np.fft.rfft(narrow)) ** 2
    assert spectrum[np.fft.rfftfreq(len(narrow), 1 / 16000) > 4200].sum() < 1e-3 * spectrum.sum()


def test_voices_name_their_engine_and_refuse_unknown_ones():
    assert Voice.flite("slt", 150, 40).name == "flite_slt_r150_p40"
    assert Voice("en-us", "m3", 150, 40).name == "en-us_m3_r150_p40"
    with pytest.raises(ValueError, match="flite has no voice 'm3'"):
        Voice.flite("m3")
    with pytest.raises(ValueError, match="engine must be one of"):
        Voice("en-us", "m3", engine="festival")


def test_flite_speakers_take_their_share_and_are_distinct():
    space = replace(VoiceSpace.for_difficulty(0.2), flite_voices=("kal", "awb", "slt"), flite_share=0.3)
    speakers = make_speakers({"test": 10, "dev": 10, "train": 40}, seed=0, space=space)
    assert [sum(v.engine == "flite" for v in speakers[s]) for s in ("test", "dev", "train")] == [3, 3, 12]
    voices = [v for split in speakers.values() for v in split]
    assert len(set(voices)) == len(voices)
    assert {v.variant for v in voices if v.engine == "flite"} == {"kal", "awb", "slt"}


def test_the_engine_list_and_held_out_voices_change_the_digest():
    config = profile_config("tiny")
    assert replace(config, engines=("espeak",)).digest() != config.digest()
    assert replace(config, unseen_voices=("flite:slt",)).digest() != config.digest()
    with pytest.raises(ValueError, match="engines must be"):
        replace(config, engines=("flite",))
    with pytest.raises(ValueError, match="every flite voice"):
        replace(config, unseen_voices=tuple(f"flite:{v}" for v in ("kal", "kal16", "awb", "rms", "slt")))


def test_without_flite_the_builder_says_so_and_builds_an_espeak_only_corpus(tmp_path):
    env = os.environ | {"KDLAB_FLITE": str(tmp_path / "no-flite"), "KDLAB_HOME": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "kdlab",
        "data",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path / "c"),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert "flite is not installed" in done.stderr and "espeak-ng voices only" in done.stderr
    info = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert info["config"]["engines"] == ["espeak"] and info["config"]["unseen_voices"] == list(ESPEAK_UNSEEN_VOICES)
    assert info["digest"] != profile_config("tiny").digest()
    trained = {v.variant for s in SPLITS for v in corpus_voices(tmp_path / "c", s)}
    unseen = {v.variant for v in corpus_voices(tmp_path / "c", "test_unseen_engine")}
    assert all(v.engine == "espeak" for s in SPLITS + HELD_OUT_SPLITS for v in corpus_voices(tmp_path / "c", s))
    assert unseen <= {spec.split(":")[1] for spec in ESPEAK_UNSEEN_VOICES} and not unseen & trained


@needs_flite
def test_held_out_splits_hold_unseen_voices_and_unseen_words():
    folder = ensure_corpus("tiny", progress=False)
    config = with_available_engines(profile_config("tiny"))
    trained = {(v.engine, v.variant) for s in SPLITS for v in corpus_voices(folder, s)}
    assert {"espeak", "flite"} == {engine for engine, _ in trained}
    unseen = corpus_voices(folder, "test_unseen_engine")
    assert {(v.engine, v.variant) for v in unseen} == {("flite", "rms")} and ("flite", "rms") not in trained
    manifests = {s: read_manifest(folder / f"{s}.jsonl") for s in SPLITS + HELD_OUT_SPLITS}
    known = {w for s in SPLITS for u in manifests[s] for w in u.text.split()}
    assert len(manifests["test_unseen_text"]) == config.test_unseen_text_utterances
    assert all(any(w not in known for w in u.text.split()) for u in manifests["test_unseen_text"])
    assert {u.speaker for u in manifests["test_unseen_text"]} <= {u.speaker for u in manifests["test"]}
    texts = {s: {u.text for u in manifests[s]} for s in manifests}
    assert not texts["test_unseen_engine"] & (texts["train"] | texts["dev"] | texts["test"])
    summary = json.loads((folder / "corpus.json").read_text())["summary"]
    assert set(summary["engines"]["test_unseen_engine"]) == {"flite"}
    assert sum(e["utterances"] for e in summary["engines"]["train"].values()) == config.train_utterances
