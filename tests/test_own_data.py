"""Readers for your own data: LibriSpeech layout and plain JSONL / CSV lists, then import as a manifest."""

import json

import numpy as np
import pytest
import soundfile as sf

from kdlab.data.manifest import read_manifest
from kdlab.data.own_data import import_dataset, read_librispeech, read_plain_manifest


def write_audio(path, seconds, sample_rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(len(str(path))).uniform(-0.3, 0.3, int(seconds * sample_rate)).astype(np.float32)
    sf.write(path, noise, sample_rate)
    return path


@pytest.fixture
def librispeech(tmp_path):
    """root/train-mini: speaker 19 (chapter 198: 3 lines, one empty, one without audio), speaker 26 (chapter 495)."""
    root = tmp_path / "LibriSpeech"
    chapter = root / "train-mini" / "19" / "198"
    write_audio(chapter / "19-198-0000.flac", 0.5)
    write_audio(chapter / "19-198-0001.flac", 0.25)
    (chapter / "19-198.trans.txt").write_text(
        "19-198-0000 NORTHANGER ABBEY\n19-198-0001 \n\n19-198-0002 THIS LITTLE WORK WAS FINISHED\n"
    )
    other = root / "train-mini" / "26" / "495"
    write_audio(other / "26-495-0000.flac", 0.75, sample_rate=8000)
    (other / "26-495.trans.txt").write_text("26-495-0000 IT'S CATHERINE MORLAND\n")
    (root / "README.TXT").write_text("not a subset")
    return root


def test_librispeech_reader_builds_utterances_and_reports_skips(librispeech):
    utts, report = read_librispeech(librispeech)
    assert [u.id for u in utts] == ["19-198-0000", "26-495-0000"]
    assert [u.speaker for u in utts] == ["19", "26"]
    assert [u.text for u in utts] == ["northanger abbey", "it's catherine morland"]
    assert [u.duration for u in utts] == pytest.approx([0.5, 0.75])
    assert all(u.snr is None and u.audio.endswith(f"{u.id}.flac") and u.audio.startswith("/") for u in utts)
    assert report.kept == 2 and dict(report.skipped) == {"empty_transcript": 1, "missing_audio": 1}
    assert "19-198-0002.flac" in report.examples["missing_audio"][0]
    assert "19-198.trans.txt:2" in report.examples["empty_transcript"][0]
    assert "kept 2, skipped 2" in report.summary()


def test_librispeech_reader_accepts_a_subset_folder_or_subset_names(librispeech):
    direct, _ = read_librispeech(librispeech / "train-mini")
    named, _ = read_librispeech(librispeech, subsets=["train-mini"])
    assert [u.id for u in direct] == [u.id for u in named] == ["19-198-0000", "26-495-0000"]
    with pytest.raises(FileNotFoundError, match="dev-clean.*available: \\['train-mini'\\]"):
        read_librispeech(librispeech, subsets=["dev-clean"])
    with pytest.raises(ValueError, match="no <subset>/<speaker>/<chapter>"):
        read_librispeech(librispeech / "train-mini" / "19" / "198")


def test_librispeech_malformed_line_names_file_and_line(librispeech):
    (librispeech / "train-mini" / "26" / "495" / "26-495.trans.txt").write_text("26-495-0000 FINE\nGARBAGE LINE\n")
    with pytest.raises(ValueError, match="26-495.trans.txt:2: utterance id 'GARBAGE'"):
        read_librispeech(librispeech)


def test_jsonl_manifest_resolves_relative_paths_and_skips_bad_entries(tmp_path):
    write_audio(tmp_path / "clips" / "a.wav", 0.5)
    write_audio(tmp_path / "clips" / "b.flac", 0.25, sample_rate=44100)
    (tmp_path / "clips" / "notes.wav").write_text("plain text")
    lines = [
        {"path": "clips/a.wav", "text": "Hello, World!", "speaker": "ann"},
        {"audio": str(tmp_path / "clips" / "b.flac"), "text": "Second one"},
        {"path": "clips/missing.wav", "text": "gone"},
        {"path": "clips/notes.wav", "text": "not audio"},
        {"path": "clips/a.wav", "text": "   ", "id": "blank"},
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    utts, report = read_plain_manifest(tmp_path / "list.jsonl")
    assert [(u.id, u.text, u.speaker) for u in utts] == [
        ("clips-a", "hello world", "ann"),
        ("clips-b", "second one", "unknown"),
    ]
    assert utts[0].audio == str((tmp_path / "clips" / "a.wav").resolve())
    assert [u.duration for u in utts] == pytest.approx([0.5, 0.25])
    assert dict(report.skipped) == {"missing_audio": 1, "not_audio": 1, "empty_transcript": 1}
    assert "missing.wav" in report.examples["missing_audio"][0]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "list.jsonl:2: not valid JSON"),
        ('{"path": "a.wav"}', "list.jsonl:2: needs a 'text'"),
        ('["a.wav", "hi"]', "list.jsonl:2: expected a JSON object"),
        ('{"text": "hi"}', "list.jsonl:2: needs a non-empty 'path'"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    write_audio(tmp_path / "a.wav", 0.1)
    (tmp_path / "list.jsonl").write_text('{"path": "a.wav", "text": "fine"}\n' + bad_line + "\n")
    with pytest.raises(ValueError, match=message):
        read_plain_manifest(tmp_path / "list.jsonl")


def test_csv_manifest_with_speaker_column(tmp_path):
    write_audio(tmp_path / "x.wav", 0.5)
    write_audio(tmp_path / "y.wav", 0.5)
    (tmp_path / "list.csv").write_text('path,text,speaker\nx.wav,"Well, yes",bob\ny.wav,No,\n')
    utts, report = read_plain_manifest(tmp_path / "list.csv")
    assert [(u.id, u.text, u.speaker) for u in utts] == [("x", "well yes", "bob"), ("y", "no", "unknown")]
    assert report.kept == 2 and not report.skipped


def test_csv_bad_row_and_bad_header_name_the_line(tmp_path):
    write_audio(tmp_path / "x.wav", 0.1)
    (tmp_path / "rows.csv").write_text("path,text\nx.wav,fine\nx.wav,too,many,fields\n")
    with pytest.raises(ValueError, match="rows.csv:3: expected 2 fields"):
        read_plain_manifest(tmp_path / "rows.csv")
    (tmp_path / "header.csv").write_text("file,transcript\nx.wav,fine\n")
    with pytest.raises(ValueError, match="header.csv:1: header must name a 'path'"):
        read_plain_manifest(tmp_path / "header.csv")
    (tmp_path / "dup.csv").write_text("path,text\nx.wav,one\nx.wav,two\n")
    with pytest.raises(ValueError, match="dup.csv:3: duplicate id 'x' \\(first on line 2\\)"):
        read_plain_manifest(tmp_path / "dup.csv")


def test_import_dataset_writes_a_manifest_read_back_identically(tmp_path, librispeech):
    utts, _ = read_librispeech(librispeech)
    path = import_dataset(utts, tmp_path / "mine", "train")
    assert path == tmp_path / "mine" / "train.jsonl"
    assert read_manifest(path) == utts
    with pytest.raises(ValueError, match="split_name"):
        import_dataset(utts, tmp_path / "mine", "../escape")
    with pytest.raises(ValueError, match="duplicate utterance ids \\['19-198-0000'\\]"):
        import_dataset(utts + utts[:1], tmp_path / "mine", "dup")
