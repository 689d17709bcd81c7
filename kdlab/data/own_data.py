"""Your own recordings as kdlab manifests: a local LibriSpeech-layout folder or a plain JSONL/CSV list.

Nothing is downloaded. Both readers return `(utterances, report)`: `Utterance` records
(absolute audio path, prepared text, speaker, duration, snr None) and a `ReadReport` counting
what was skipped and why, with examples. What training would reject later is refused here:

* every audio file is decoded in full, so a truncated or corrupt file is skipped and counted
  (its header alone still claims the whole duration);
* transcripts go through `transcript_policy.prepare_transcript` (normalise, spell out whole
  numbers, reject what the tokenizer cannot encode: counted as ``unsupported_characters``);
* text files are read as UTF-8 with or without a BOM; other bytes are an error naming the file
  and line, as is a malformed line (wrong CSV field count, bad JSON, bad LibriSpeech id).

`import_dataset` writes the records as `<out_dir>/<split_name>.jsonl` for the rest of kdlab.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from kdlab.data.audio_io import AudioError, audio_duration, load_audio
from kdlab.data.manifest import Utterance, jsonl_records, write_manifest
from kdlab.data.transcript_policy import prepare_transcript

MAX_EXAMPLES = 5
_AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass
class ReadReport:
    """What a reader kept and skipped. skipped: reason -> count; examples: reason -> first few files."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    spelled_out: int = 0

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    def summary(self) -> str:
        """e.g. `data/train.csv: kept 120, skipped 2 (empty_transcript 1, missing_audio 1: a.wav)`."""
        text = f"{self.source}: kept {self.kept}, skipped {sum(self.skipped.values())}"
        if self.spelled_out:
            text += f", numbers spelled out in {self.spelled_out}"
        if self.skipped:
            parts = [f"{r} {n}: {', '.join(self.examples[r])}" for r, n in sorted(self.skipped.items())]
            text += " (" + "; ".join(parts) + ")"
        return text

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "examples": self.examples,
            "spelled_out": self.spelled_out,
        }


def read_librispeech(root: str | Path, subsets: Sequence[str] | None = None) -> tuple[list[Utterance], ReadReport]:
    """Read `<root>/<subset>/<speaker>/<chapter>/` folders holding `<speaker>-<chapter>.trans.txt`
    (lines `<speaker>-<chapter>-<utt> TEXT`) and `<speaker>-<chapter>-<utt>.flac` (or .wav).

    `subsets`: folder names under `root` (default: every folder that has that layout; `root`
    may also be one subset folder itself). Speaker = the speaker folder's name.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech folder not found: {root}")
    report = ReadReport(str(root))
    utterances = []
    for subset in _librispeech_subsets(root, subsets):
        for transcript in sorted(subset.glob("*/*/*.trans.txt")):
            prefix = transcript.name[: -len(".trans.txt")] + "-"
            speaker = transcript.parent.parent.name
            for line_number, line in enumerate(read_text(transcript).splitlines(), start=1):
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                if not utt_id.startswith(prefix):
                    raise ValueError(
                        f"{transcript}:{line_number}: utterance id {utt_id!r} should start with {prefix!r}; "
                        "expected lines '<speaker>-<chapter>-<utt> TEXT'"
                    )
                audio = next(
                    (
                        transcript.parent / (utt_id + s)
                        for s in _AUDIO_SUFFIXES
                        if (transcript.parent / (utt_id + s)).is_file()
                    ),
                    transcript.parent / (utt_id + ".flac"),
                )
                utt = _make_utterance(utt_id, audio, text, speaker, f"{transcript}:{line_number}", report)
                if utt is not None:
                    utterances.append(utt)
    report.kept = len(utterances)
    return utterances, report


def _librispeech_subsets(root: Path, subsets: Sequence[str] | None) -> list[Path]:
    if subsets is not None:
        missing = [s for s in subsets if not (root / s).is_dir()]
        if missing:
            available = sorted(d.name for d in root.iterdir() if d.is_dir())
            raise FileNotFoundError(f"{root}: subset folder(s) {missing} not found; available: {available}")
        return [root / s for s in subsets]
    found = sorted(d for d in root.iterdir() if d.is_dir() and next(d.glob("*/*/*.trans.txt"), None))
    if not found and next(root.glob("*/*/*.trans.txt"), None):
        found = [root]  # root is a single subset such as .../LibriSpeech/dev-clean
    if not found:
        raise ValueError(
            f"{root}: no <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt found; "
            "point at a LibriSpeech-layout folder (or use read_plain_manifest for a list of files)"
        )
    return found


def read_plain_manifest(path: str | Path) -> tuple[list[Utterance], ReadReport]:
    """Read a JSONL (`.jsonl`/`.json`, one object per line) or CSV/TSV (`.csv`/`.tsv`, with header) list.

    Fields: `path` (or `audio`) and `text` required; `speaker` and `id` optional (defaults:
    "unknown", the audio path relative to the manifest without its suffix). Relative audio
    paths are resolved against the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        read_text(path)  # the encoding check, naming the line
        records = jsonl_records(path, "with 'path' and 'text'")
    elif suffix in (".csv", ".tsv"):
        records = _csv_records(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: unknown manifest type {suffix!r}; use .jsonl, .json, .csv or .tsv")
    report = ReadReport(str(path))
    folder = path.parent.resolve()
    utterances, first_line = [], {}
    for line_number, record in records:
        where = f"{path}:{line_number}"
        audio_field = "path" if record.get("path") not in (None, "") else "audio"
        audio_value, text = record.get(audio_field), record.get("text")
        if not isinstance(audio_value, str) or not audio_value.strip():
            raise ValueError(f"{where}: needs a non-empty 'path' (or 'audio') field, got {record}")
        if not isinstance(text, str):
            raise ValueError(f"{where}: needs a 'text' field holding a string, got {text!r}")
        audio = Path(audio_value.strip())
        audio = audio if audio.is_absolute() else folder / audio
        utt_id = str(record.get("id") or "").strip() or _default_id(audio, folder)
        if utt_id in first_line:
            raise ValueError(
                f"{where}: duplicate id {utt_id!r} (first on line {first_line[utt_id]}); give each line an 'id'"
            )
        first_line[utt_id] = line_number
        speaker = str(record.get("speaker") or "").strip() or "unknown"
        utt = _make_utterance(utt_id, audio, text, speaker, where, report)
        if utt is not None:
            utterances.append(utt)
    report.kept = len(utterances)
    return utterances, report


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    if "text" not in header or not {"path", "audio"} & set(header):
        raise ValueError(f"{path}:1: header must name a 'path' (or 'audio') and a 'text' column, got {header}")
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)}), got {len(fields)}"
            )
        yield reader.line_num, dict(zip(header, fields))


def read_text(path: Path) -> str:
    """A text file's content as UTF-8, with or without a byte-order mark; other bytes are a
    ValueError naming the file, line and byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} at column {column} is not UTF-8; "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _default_id(audio: Path, folder: Path) -> str:
    try:
        relative = audio.with_suffix("").relative_to(folder).as_posix()
    except ValueError:
        relative = audio.stem
    return relative.replace("/", "-")


def _make_utterance(
    utt_id: str, audio: Path, text: str, speaker: str, where: str, report: ReadReport
) -> Utterance | None:
    """An Utterance, or None after counting why it was skipped (empty or unsupported text, missing,
    truncated or unreadable audio)."""
    try:
        prepared = prepare_transcript(text)
    except ValueError as error:
        report.skip("unsupported_characters", f"{where} ({utt_id}): {str(error).split(' (from ')[0]}")
        return None
    if not prepared:
        report.skip("empty_transcript", f"{where} ({utt_id})")
        return None
    try:
        duration = decoded_duration(audio)
    except AudioError as error:
        report.skip(error.reason, str(error))
        return None
    if any(c.isdigit() for c in text):
        report.spelled_out += 1
    return Utterance(id=utt_id, audio=str(audio.resolve()), text=prepared, speaker=speaker, duration=duration, snr=None)


def decoded_duration(audio: Path) -> float:
    """Seconds of `audio` after decoding every sample at its own rate: a truncated file (whose header
    still declares the full length) raises `AudioError` like any unreadable one."""
    seconds = audio_duration(audio)
    load_audio(audio, target_sr=sf.info(str(audio)).samplerate)
    return seconds


def import_dataset(utterances: Sequence[Utterance], out_dir: str | Path, split_name: str) -> Path:
    """Write `utterances` as `<out_dir>/<split_name>.jsonl` (the kdlab manifest format); returns its path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", split_name):
        raise ValueError(f"split_name must be a plain name such as 'train' or 'dev-clean', got {split_name!r}")
    if not utterances:
        raise ValueError(f"no utterances to import into split {split_name!r}; check the reader's report")
    seen = Counter(u.id for u in utterances)
    duplicates = [i for i, n in seen.items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate utterance ids {duplicates[:5]} in split {split_name!r}; ids must be unique")
    path = Path(out_dir) / f"{split_name}.jsonl"
    write_manifest(path, utterances)
    return path
