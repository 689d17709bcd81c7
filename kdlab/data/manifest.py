"""Manifests: one JSON object per line describing an utterance.

Fields: `id`, `audio` (path), `text`, `speaker`, `duration` (seconds), `snr` (dB, or null
for clean / real recordings). On disk, audio paths under the manifest's folder are written
relative to it, so a corpus folder can be moved or compared byte for byte; `read_manifest`
returns absolute paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REQUIRED_FIELDS = ("id", "audio", "text", "speaker", "duration")


@dataclass(frozen=True)
class Utterance:
    """One utterance of a manifest."""

    id: str
    audio: str
    text: str
    speaker: str
    duration: float
    snr: float | None = None


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write `utterances` to `path` (JSONL), atomically, with audio paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for utt in utterances:
            record = asdict(utt)
            audio = Path(utt.audio)
            if audio.is_absolute():
                try:
                    record["audio"] = audio.resolve().relative_to(folder).as_posix()
                except ValueError:
                    record["audio"] = str(audio)
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL manifest; audio paths come back absolute.

    Raises ValueError naming the file and line for malformed lines or missing fields.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    folder = path.parent.resolve()
    utterances = []
    for line_number, record in jsonl_records(path, "with the manifest fields"):
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        if missing:
            raise ValueError(f"{path}:{line_number}: missing field(s) {', '.join(missing)}")
        audio = Path(record["audio"])
        if not audio.is_absolute():
            audio = folder / audio
        utterances.append(
            Utterance(
                id=str(record["id"]),
                audio=str(audio),
                text=str(record["text"]),
                speaker=str(record["speaker"]),
                duration=float(record["duration"]),
                snr=None if record.get("snr") is None else float(record["snr"]),
            )
        )
    return utterances


def jsonl_records(path: Path, expected: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file.

    Raises ValueError naming the file and line for invalid JSON or a line that is not an
    object (`expected` says what the object should hold, for the message).
    """
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Excel, Notepad) is not JSON
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object {expected}, got {record!r}")
            yield line_number, record
