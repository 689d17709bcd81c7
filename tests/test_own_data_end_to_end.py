"""Your own data from the command line to the results (issue 16, acceptance 1).

A LibriSpeech-layout folder of synthesised speech (the tiny corpus's espeak-ng audio, written as
FLAC with .trans.txt transcripts) is imported with ``kdlab data --librispeech`` and the tiny study
runs on it with a BPE tokenizer, every run keyed by that corpus's content digest.
"""

import contextlib
import io
import json

import pytest
import soundfile as sf
from stand_ins import isolated_kdlab_home

from kdlab.cli import main
from kdlab.data.corpus import ensure_corpus
from kdlab.data.manifest import read_manifest
from kdlab.train.recipes.corpus_choice import corpus_content_digest
from kdlab.train.recipes.finetune import FinetuneConfig, default_finetune_dir, load_finetune

SUBSETS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
FIRST_SPEAKER = {"train": 100, "dev": 200, "test": 300}


def librispeech_tree(root, corpus) -> None:
    """``root/<subset>/<speaker>/<chapter>/<id>.flac`` + ``<speaker>-<chapter>.trans.txt`` from `corpus`."""
    for split, subset in SUBSETS.items():
        by_speaker: dict[str, list] = {}
        for utterance in read_manifest(corpus / f"{split}.jsonl"):
            by_speaker.setdefault(utterance.speaker, []).append(utterance)
        for number, utterances in enumerate(by_speaker.values()):
            speaker = str(FIRST_SPEAKER[split] + number)
            chapter = root / subset / speaker / "7"
            chapter.mkdir(parents=True)
            lines = []
            for index, utterance in enumerate(utterances):
                uid = f"{speaker}-7-{index:04d}"
                audio, rate = sf.read(utterance.audio)
                sf.write(chapter / f"{uid}.flac", audio, rate)
                lines.append(f"{uid} {utterance.text.upper()}")
            (chapter / f"{speaker}-7.trans.txt").write_text("\n".join(lines) + "\n")


def run_cli(args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(KDLAB_HOME, the imported corpus folder) in a home whose runs/ is empty."""
    tiny = ensure_corpus("tiny", progress=False)
    root = tmp_path_factory.mktemp("own")
    librispeech_tree(root / "LibriSpeech", tiny)
    home = root / "home"
    patch = isolated_kdlab_home(home, tiny)
    corpus = root / "mine"
    run_cli(["data", "--librispeech", str(root / "LibriSpeech"), "--out", str(corpus)])
    yield home, corpus
    patch.undo()


def test_an_imported_librispeech_folder_trains_the_tiny_study_with_bpe(imported):
    home, corpus = imported
    out = home / "outputs" / "study"
    stdout = run_cli(
        [
            "study",
            "--profile",
            "tiny",
            "--corpus",
            str(corpus),
            "--tokenizer",
            "bpe:64",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--steps",
            "2",
            "--latency-seconds",
            "1",
            "--latency-min-time",
            "0.02",
            "--latency-runs",
            "1",
            "--methods",
            "kd+l0",
            "--modes",
            "offline",
        ]
    )
    assert "results:" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["corpus_dir"] == str(corpus) and results["config"]["tokenizer"] == "bpe:64"
    teacher = load_finetune(
        default_finetune_dir(
            FinetuneConfig.for_profile("tiny", streaming=False, steps=2, corpus_dir=str(corpus), tokenizer="bpe:64")
        )
    )
    # the teacher trained on the imported corpus, with the BPE model it carries (not the characters)
    assert teacher.config.corpus_digest == corpus_content_digest(corpus)
    assert teacher.tokenizer.kind == "bpe" and 30 <= teacher.tokenizer.vocab_size <= 64
    assert teacher.model.config.vocab_size == teacher.tokenizer.vocab_size
    assert len(teacher.test_transcripts()) == len(read_manifest(corpus / "test.jsonl"))
    assert {row["method"] for row in results["rows"]} >= {"teacher", "kd", "kd+l0"}
