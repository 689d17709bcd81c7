"""The embedded speech corpus: profiles, and a cached, deterministic, parallel builder.

A corpus folder holds `audio/<split>/<id>.wav` (16 kHz mono PCM_16), the manifests
`train.jsonl`, `dev.jsonl`, `test.jsonl` (see `kdlab.data.manifest`), `corpus.json`
(config, speakers, summary) and a marker `.kdlab-corpus` that is marked complete last.

Splits are speaker-disjoint (no accent x variant pair is shared) and sentence-disjoint.
Each utterance is rendered from its own random generator seeded by (seed, split, index) and
espeak-ng is reset before each utterance, so the same config gives byte-identical
manifests and audio whatever the output folder or number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from kdlab.data.augment import AugmentConfig
from kdlab.data.voices import Voice, VoiceSpace, make_speakers

FORMAT_VERSION = 1  # bump when the builder's output changes for the same config
SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
MARKER = ".kdlab-corpus"
_CHUNK = 24  # utterances per worker task
# Random streams are seeded by (seed, split, stream, index); the stream tag keeps them apart.
_UTTERANCE_STREAM, _BABBLE_STREAM = 1, 2


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides a corpus' content (the output folder and worker count do not).

    difficulty in [0, 1] sets the SNR range, noise mix, reverberation probability, accents,
    voice variants and speaking rates (see `AugmentConfig.for_difficulty` and
    `VoiceSpace.for_difficulty`); `snr_db` and `reverb_prob` override those when not None.
    `lexicon_fraction` in (0, 1] keeps that fraction of each word list of the grammar
    (`Grammar.with_lexicon`): fewer distinct words, each heard more often.
    """

    profile: str = "tiny"
    seed: int = 0
    train_utterances: int = 200
    dev_utterances: int = 40
    test_utterances: int = 40
    train_speakers: int = 40
    dev_speakers: int = 8
    test_speakers: int = 8
    difficulty: float = 0.5
    snr_db: tuple[float, float] | None = None
    reverb_prob: float | None = None
    min_words: int = 3
    max_words: int = 15
    babble_clips: int = 16  # per split, drawn from that split's own speakers and sentences
    lexicon_fraction: float = 1.0

    def __post_init__(self) -> None:
        for split in SPLITS:
            if getattr(self, f"{split}_utterances") < 1 or getattr(self, f"{split}_speakers") < 1:
                raise ValueError(f"{split}_utterances and {split}_speakers must be >= 1")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}..{self.max_words}")
        if not 0.0 < self.lexicon_fraction <= 1.0:
            raise ValueError(f"lexicon_fraction must be in (0, 1], got {self.lexicon_fraction}")
        if self.babble_clips < 1:
            raise ValueError(f"babble_clips must be >= 1, got {self.babble_clips}")
        self.augment_config()  # validates snr_db / reverb_prob overrides

    def utterances(self, split: str) -> int:
        return getattr(self, f"{split}_utterances")

    def speakers(self, split: str) -> int:
        return getattr(self, f"{split}_speakers")

    def augment_config(self) -> AugmentConfig:
        """Noise / reverberation settings: from `difficulty`, with the explicit overrides applied."""
        config = AugmentConfig.for_difficulty(self.difficulty)
        if self.snr_db is not None:
            config = replace(config, snr_db=tuple(float(v) for v in self.snr_db))
        if self.reverb_prob is not None:
            config = replace(config, reverb_prob=float(self.reverb_prob))
        return config

    def voice_space(self) -> VoiceSpace:
        return VoiceSpace.for_difficulty(self.difficulty)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["snr_db"] is not None:
            data["snr_db"] = list(data["snr_db"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "CorpusConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CorpusConfig field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if values.get("snr_db") is not None:
            values["snr_db"] = tuple(values["snr_db"])
        return cls(**values)

    def digest(self) -> str:
        """Short stable hash of the config, the builder format and the grammar files."""
        payload = {"config": self.to_dict(), "format": FORMAT_VERSION, "grammar": _grammar_digest()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


PROFILES: dict[str, CorpusConfig] = {
    # tests and quick demos: ~15 minutes of audio, seconds to build
    "tiny": CorpusConfig(profile="tiny", train_utterances=200, dev_utterances=40, test_utterances=40),
    # the main job: >= 3 h train, >= 15 min dev and test (utterances average about 2.7 s).
    # Difficulty 0.2 (SNR 11..31 dB, the three standard accents, 142..172 wpm): at 0.5 a conformer
    # stayed on the CTC / RNN-T blank plateau past the teacher's 20-minute budget. A fifth of the
    # grammar's lexicon (493 distinct training words instead of 1,824): with every word heard more often, a
    # 2 M-parameter teacher trained for 20 CPU minutes spells more of them right
    # (docs/teacher_calibration.md).
    "default": CorpusConfig(
        profile="default", train_utterances=4400, dev_utterances=420, test_utterances=420,
        train_speakers=80, dev_speakers=10, test_speakers=10, difficulty=0.2, lexicon_fraction=0.2,
    ),  # fmt: skip
    # closer to a real small corpus: >= 30 h train
    "full": CorpusConfig(
        profile="full", train_utterances=44000, dev_utterances=1500, test_utterances=1500,
        train_speakers=200, dev_speakers=20, test_speakers=20,
    ),  # fmt: skip
}


def profile_config(profile: str, seed: int = 0) -> CorpusConfig:
    """The config of a named profile with the given seed."""
    if profile not in PROFILES:
        raise ValueError(f"unknown corpus profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[profile], seed=seed)


@lru_cache(maxsize=1)
def _grammar_digest() -> str:
    from kdlab.data.grammar import GRAMMAR_DIR

    digest = hashlib.sha256()
    for path in sorted(GRAMMAR_DIR.glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def default_dir(config: CorpusConfig) -> Path:
    """`kdlab.paths.data_cache() / "<profile>-<digest>"`."""
    from kdlab.paths import data_cache

    return data_cache() / f"{config.profile}-{config.digest()}"


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: str | Path, config: CorpusConfig) -> bool:
    """True if `folder` holds a finished build of exactly this config."""
    marker = _read_marker(Path(folder))
    return bool(marker and marker.get("complete") and marker.get("digest") == config.digest())


def _write_marker(folder: Path, digest: str, complete: bool) -> None:
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"digest": digest, "complete": complete}))
    os.replace(tmp, folder / MARKER)


def _prepare_folder(folder: Path) -> None:
    """Remove a previous (other or unfinished) build; refuse to touch folders kdlab did not make."""
    if folder.exists() and any(folder.iterdir()) and _read_marker(folder) is None:
        raise ValueError(f"{folder} is not empty and holds no kdlab corpus; choose a new or empty folder with --out")
    if folder.exists():
        shutil.rmtree(folder / "audio", ignore_errors=True)
        for name in (*(f"{split}.jsonl" for split in SPLITS), "corpus.json"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def _plan(config: CorpusConfig) -> tuple[dict[str, list[str]], dict[str, list[Voice]]]:
    """Sentences and speakers per split (held-out splits are drawn first)."""
    from kdlab.data.grammar import default_grammar, split_sentences

    order = ("test", "dev", "train")
    grammar = default_grammar().with_lexicon(config.lexicon_fraction)
    sentences = split_sentences({s: config.utterances(s) for s in order}, config.seed, config.min_words,
                                config.max_words, grammar)
    speakers = make_speakers({s: config.speakers(s) for s in order}, config.seed, config.voice_space())
    return sentences, speakers


@lru_cache(maxsize=4)
def _babble_bank(config: CorpusConfig, split: str) -> tuple[np.ndarray, ...]:
    """Clean clips of the split's own speakers saying the split's own sentences (babble noise)."""
    from kdlab.data.espeak import synthesize

    sentences, speakers = _plan(config)
    rng = np.random.default_rng([config.seed, SPLITS.index(split), _BABBLE_STREAM, 0])
    texts, voices = sentences[split], speakers[split]
    return tuple(
        synthesize(texts[int(rng.integers(len(texts)))], voices[int(rng.integers(len(voices)))])
        for _ in range(config.babble_clips)
    )


def _render(task: tuple[CorpusConfig, str, str, list[tuple[int, str, Voice]]]) -> list[tuple[float, float | None]]:
    """Worker: synthesise, augment and write one chunk of utterances; returns (duration, snr) each."""
    import soundfile

    from kdlab.data.augment import augment
    from kdlab.data.espeak import synthesize

    config, folder, split, jobs = task
    augment_config = config.augment_config()
    results = []
    for index, text, voice in jobs:
        rng = np.random.default_rng([config.seed, SPLITS.index(split), _UTTERANCE_STREAM, index])
        result = augment(synthesize(text, voice), rng, augment_config, _babble_bank(config, split), SAMPLE_RATE)
        soundfile.write(_audio_path(Path(folder), split, index), result.audio, SAMPLE_RATE, subtype="PCM_16")
        results.append((round(len(result.audio) / SAMPLE_RATE, 4), result.snr_db))
    return results


def _utterance_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def _audio_path(folder: Path, split: str, index: int) -> Path:
    return folder / "audio" / split / f"{_utterance_id(split, index)}.wav"


def build_corpus(
    config: CorpusConfig, out_dir: str | Path | None = None, progress: bool = True, workers: int = 2
) -> Path:
    """Build the corpus described by `config` into `out_dir` (default `default_dir(config)`).

    Does nothing if that folder already holds a complete build of the same config. Uses
    `workers` processes (1 = in this process). Returns the folder.
    """
    from tqdm.auto import tqdm

    from kdlab.data.manifest import Utterance, write_manifest

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    folder = Path(out_dir) if out_dir is not None else default_dir(config)
    if is_complete(folder, config):
        return folder
    _prepare_folder(folder)
    _write_marker(folder, config.digest(), complete=False)
    sentences, speakers = _plan(config)
    tasks = []
    for split in SPLITS:
        (folder / "audio" / split).mkdir(parents=True, exist_ok=True)
        voices = speakers[split]
        jobs = [(i, text, voices[i % len(voices)]) for i, text in enumerate(sentences[split])]
        tasks += [(config, str(folder), split, jobs[i : i + _CHUNK]) for i in range(0, len(jobs), _CHUNK)]

    bar = tqdm(total=sum(len(t[3]) for t in tasks), unit="utt", desc=f"corpus {folder.name}", disable=not progress)
    outputs = []
    with multiprocessing.get_context().Pool(workers) if workers > 1 else nullcontext() as pool:
        for task, output in zip(tasks, pool.imap(_render, tasks) if pool else map(_render, tasks)):
            outputs.append(output)
            bar.update(len(task[3]))
    bar.close()

    utterances: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for (_, _, split, jobs), output in zip(tasks, outputs):
        for (index, text, voice), (duration, snr) in zip(jobs, output):
            path = str(_audio_path(folder, split, index).resolve())
            utterances[split].append(Utterance(_utterance_id(split, index), path, text, voice.name, duration, snr))
    for split in SPLITS:
        write_manifest(folder / f"{split}.jsonl", utterances[split])
    info = {
        "format": FORMAT_VERSION,
        "digest": config.digest(),
        "config": config.to_dict(),
        "augment": config.augment_config().to_dict(),
        "speakers": {split: [v.to_dict() | {"name": v.name} for v in speakers[split]] for split in SPLITS},
        "summary": corpus_summary(folder),
    }
    (folder / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    _write_marker(folder, config.digest(), complete=True)
    return folder


def corpus_summary(folder: str | Path) -> dict:
    """Per split: utterances, hours, speakers, mean seconds, mean SNR; plus the vocabulary size
    (distinct words over all splits). Reads the manifests of `folder`."""
    from kdlab.data.manifest import read_manifest

    folder = Path(folder)
    splits, words = {}, set()
    for split in SPLITS:
        utterances = read_manifest(folder / f"{split}.jsonl")
        seconds = sum(u.duration for u in utterances)
        snrs = [u.snr for u in utterances if u.snr is not None]
        splits[split] = {
            "utterances": len(utterances),
            "hours": round(seconds / 3600, 4),
            "speakers": len({u.speaker for u in utterances}),
            "mean_seconds": round(seconds / max(len(utterances), 1), 3),
            "mean_snr_db": round(float(np.mean(snrs)), 2) if snrs else None,
        }
        for u in utterances:
            words.update(u.text.split())
    return {
        "splits": splits,
        "utterances": sum(s["utterances"] for s in splits.values()),
        "hours": round(sum(s["hours"] for s in splits.values()), 4),
        "vocabulary": len(words),
    }


def ensure_corpus(
    profile: str = "tiny", seed: int = 0, out_dir: str | Path | None = None, progress: bool = True, workers: int = 2
) -> Path:
    """The folder of the `profile` corpus with `seed`, built first if missing or outdated."""
    return build_corpus(profile_config(profile, seed), out_dir, progress=progress, workers=workers)
