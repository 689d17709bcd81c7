"""`python -m kdlab data` importing a local LibriSpeech-layout folder and plain lists."""

import json

import numpy as np
import pytest
import soundfile as sf

from kdlab.cli import main
from kdlab.data.manifest import read_manifest


def _tone(path, seconds=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)


def _librispeech_tree(root):
    for subset, speaker in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        chapter = root / subset / speaker / "198"
        chapter.mkdir(parents=True)
        lines = []
        for utt in range(3):
            uid = f"{speaker}-198-{utt:04d}"
            _tone(chapter / f"{uid}.flac", seconds=0.5 + utt * 0.1)
            lines.append(f"{uid} HELLO WORLD NUMBER {utt}" if utt else f"{uid} ")
        (chapter / f"{speaker}-198.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech_import_writes_three_splits_and_counts_skips(tmp_path, capsys):
    root = tmp_path / "LibriSpeech"
    _librispeech_tree(root)
    out = tmp_path / "corpus"
    with pytest.raises(SystemExit) as done:
        main(["data", "--librispeech", str(root), "--out", str(out)])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    for split, speaker in (("train", "19"), ("dev", "84"), ("test", "61")):
        utterances = read_manifest(out / f"{split}.jsonl")
        assert [u.speaker for u in utterances] == [speaker, speaker]  # the empty transcript was skipped
        assert all(abs(u.duration - sf.info(u.audio).duration) < 1e-6 for u in utterances)
    assert printed.count("skipped 1") == 3


def test_list_import_needs_every_split(tmp_path, capsys):
    _tone(tmp_path / "a.wav")
    (tmp_path / "train.jsonl").write_text(json.dumps({"path": "a.wav", "text": "a b"}) + "\n")
    with pytest.raises(SystemExit) as done:
        main(["data", "--train-list", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "c")])
    assert done.value.code == 2
    assert "--dev-list --test-list" in capsys.readouterr().err


def test_list_import_reads_jsonl_and_csv(tmp_path):
    _tone(tmp_path / "a.wav")
    _tone(tmp_path / "b.wav", seconds=0.8)
    (tmp_path / "train.jsonl").write_text(json.dumps({"path": "a.wav", "text": "Hello, World!"}) + "\n")
    (tmp_path / "dev.csv").write_text("path,text\nb.wav,good morning\n")
    (tmp_path / "test.csv").write_text("path,text\na.wav,good night\n")
    with pytest.raises(SystemExit):
        main(
            [
                "data",
                "--train-list",
                str(tmp_path / "train.jsonl"),
                "--dev-list",
                str(tmp_path / "dev.csv"),
                "--test-list",
                str(tmp_path / "test.csv"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
    train = read_manifest(tmp_path / "c" / "train.jsonl")
    assert [u.text for u in train] == ["hello world"]
    assert read_manifest(tmp_path / "c" / "dev.jsonl")[0].duration == pytest.approx(0.8)
