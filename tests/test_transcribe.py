"""`kdlab transcribe` (issue 15, acceptance 3) with a tiny run on synthesised utterances of the tiny
corpus: the transcript is the one the evaluation path (corpus loader + decoder) gives for the same
utterance; ONNX Runtime and streaming give the same text; a missing, empty, non-audio or too short
file gets one error line naming it while the other files are still transcribed."""

from __future__ import annotations

import re

import pytest
import soundfile
import torch

from kdlab.cli import main
from kdlab.models.decoding import decode
from kdlab.train.recipes.data_setup import SpeechData

torch.set_num_threads(1)
LINE = re.compile(r"^(?P<path>\S+): (?P<text>.*)  \[(?P<seconds>[\d.]+) s audio, RTF (?P<rtf>[\d.]+)\]$")


@pytest.fixture(scope="module")
def offline_run(offline_export):
    """A tiny offline run, its ONNX export already in the run folder (tests/conftest.py)."""
    return offline_export.model, offline_export.run_dir


@pytest.fixture(scope="module")
def streaming_run(streaming_export):
    """A tiny streaming run, its ONNX chunk step already in the run folder (tests/conftest.py)."""
    return streaming_export.model, streaming_export.run_dir


def _transcribe(capsys, *args) -> tuple[int, dict[str, str], list[str], str]:
    """Exit code, {path: transcript}, stderr lines, stdout of `kdlab transcribe ARGS`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", *map(str, args)])
    printed = capsys.readouterr()
    texts = {m["path"]: m["text"] for line in printed.out.splitlines() if (m := LINE.match(line))}
    return exit_info.value.code, texts, printed.err.splitlines(), printed.out


def _reference(model, data, method="greedy", beam=4) -> tuple[str, str]:
    """(audio path, transcript) of the first test utterance through the corpus loader and the decoder."""
    batch = next(iter(data.eval_loader("test", limit=1)))
    (utterance,) = [u for u in data.splits["test"] if u.id == batch.ids[0]]
    return utterance.audio, decode(model, batch, data.tokenizer, method=method, beam=beam)[0]


def test_transcribe_prints_the_transcript_of_the_evaluation_path_and_a_real_time_factor(
    offline_run, tiny_speech_data, capsys
):
    model, run_dir = offline_run
    audio, expected = _reference(model, tiny_speech_data)
    code, texts, errors, out = _transcribe(capsys, run_dir, audio)
    assert code == 0 and not errors
    assert expected and texts == {audio: expected}
    seconds = float(LINE.match(out.splitlines()[0])["seconds"])
    assert seconds == pytest.approx(
        next(u.duration for u in tiny_speech_data.splits["test"] if u.audio == audio), abs=0.01
    )
    assert "transcribed 1 of 1 file(s) (torch, offline, greedy)" in out


def test_onnx_runtime_and_beam_search_give_the_pytorch_transcripts(offline_run, tiny_speech_data, capsys):
    model, run_dir = offline_run
    audio, expected_beam = _reference(model, tiny_speech_data, method="beam", beam=3)
    code, onnx_texts, errors, _ = _transcribe(capsys, run_dir, audio, "--runtime", "onnx", "--beam", "3")
    assert code == 0 and not errors and onnx_texts == {audio: expected_beam}
    assert (run_dir / "onnx" / "model-offline.onnx").is_file()  # the session's export, reused (first use: below)


def test_streaming_transcripts_agree_across_runtimes_and_with_the_offline_forward(
    streaming_run, tiny_speech_data, capsys
):
    model, run_dir = streaming_run
    audio, offline_text = _reference(model, tiny_speech_data)  # a streaming model's full forward uses the chunk mask
    for runtime in ("torch", "onnx"):
        code, texts, errors, _ = _transcribe(capsys, run_dir, audio, "--streaming", "--runtime", runtime)
        assert code == 0 and not errors and texts == {audio: offline_text}, runtime


def test_bad_files_get_one_error_line_each_and_the_good_ones_are_still_transcribed(
    offline_run, tiny_speech_data, capsys, tmp_path
):
    model, run_dir = offline_run
    audio, expected = _reference(model, tiny_speech_data)
    missing, empty, text = tmp_path / "missing.wav", tmp_path / "empty.wav", tmp_path / "notes.flac"
    empty.write_bytes(b"")
    text.write_text("not audio at all\n")
    short = tmp_path / "short.wav"

    soundfile.write(short, torch.zeros(480).numpy(), 16000)  # 30 ms: fewer frames than the encoder reads
    code, texts, errors, out = _transcribe(capsys, run_dir, missing, audio, empty, text, short)
    assert code == 1
    assert texts == {audio: expected}
    assert len(errors) == 4, errors
    for bad, line in zip((missing, empty, text, short), errors):
        assert line.startswith(f"error: {bad}"), line
    assert "transcribed 1 of 5 file(s)" in out


def test_streaming_transcription_of_an_offline_run_is_refused_with_what_to_do(offline_run, tiny_speech_data, capsys):
    _, run_dir = offline_run
    code, _, errors, _ = _transcribe(capsys, run_dir, "x.wav", "--streaming")
    assert code == 2 and "holds an offline model" in errors[0] and "without --streaming" in errors[0]


def test_a_teacher_fine_tune_run_transcribes_like_its_evaluation(tiny_speech_data, tmp_path, capsys):
    """A real tiny run (two RNN-T steps from random init) in the teacher's run-folder format, exported
    to ONNX on first use."""
    from stand_ins import isolated_kdlab_home

    from kdlab.train.recipes.finetune import FinetuneConfig, run_finetune

    patch = isolated_kdlab_home(tmp_path, tiny_speech_data.corpus_dir)
    try:
        result = run_finetune(FinetuneConfig.for_profile("tiny", init="random", steps=2), device="cpu", progress=False)
    finally:
        patch.undo()
    data = SpeechData.from_corpus(tiny_speech_data.corpus_dir, cmvn=result.cmvn)
    audio, expected = _reference(result.model, data)
    assert not (result.run_dir / "onnx").exists()
    code, texts, errors, _ = _transcribe(capsys, result.run_dir, audio, "--runtime", "onnx")
    assert code == 0 and not errors and texts == {audio: expected}
    assert (result.run_dir / "onnx" / "model-offline.onnx").is_file()
