"""The embedded speech corpus: profiles, and a cached, deterministic, parallel builder.

A corpus folder holds `audio/<split>/<id>.wav` (16 kHz mono PCM_16), the manifests
`train.jsonl`, `dev.jsonl`, `test.jsonl` and the held-out `test_unseen_engine.jsonl`,
`test_unseen_text.jsonl` (see `kdlab.data.manifest`), `corpus.json` (config, speakers, summary)
and a marker `.kdlab-corpus` that is marked complete last.

Speakers come from two synthesis engines, espeak-ng and flite (`CorpusConfig.engines`,
`flite_share`). Train, dev and test are speaker-disjoint and sentence-disjoint. The held-out
splits test what a model learnt beyond them: `test_unseen_engine` is spoken by voices no other
split uses (`unseen_voices`, by default flite's rms), `test_unseen_text` by the test speakers
saying sentences that each hold words the other splits never contain (`held_out_word_fraction`
of every word list is kept for it).

Each utterance is rendered from its own random generator seeded by (seed, split, index) and
both engines are stateless per utterance, so the same config gives byte-identical manifests and
audio whatever the output folder or number of worker processes. A config asking for flite on a
machine without it is built as an espeak-only corpus (`with_available_engines`), which has its
own digest: a corpus never silently differs between machines.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from kdlab.data.augment import AugmentConfig
from kdlab.data.voices import FLITE_VOICES, Voice, VoiceSpace, make_speakers, parse_voice, unseen_voice_speakers

FORMAT_VERSION = 2  # bump when the builder's output changes for the same config
SPLITS = ("train", "dev", "test")
HELD_OUT_SPLITS = ("test_unseen_engine", "test_unseen_text")
ALL_SPLITS = SPLITS + HELD_OUT_SPLITS
# Held out when flite is missing: espeak-ng's Klatt-synthesiser variants, another synthesis method.
ESPEAK_UNSEEN_VOICES = ("espeak:klatt", "espeak:klatt2", "espeak:klatt3", "espeak:klatt4")
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
    (`Grammar.with_lexicon`): fewer distinct words, each heard more often. Before that,
    `held_out_word_fraction` of each list is set aside for `test_unseen_text` (`Grammar.split_lexicon`).
    `engines` speak train/dev/test, flite voicing `flite_share` of each split's speakers;
    `unseen_voices` ("engine:variant") speak only `test_unseen_engine`.
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
    engines: tuple[str, ...] = ("espeak", "flite")
    flite_share: float = 0.3
    unseen_voices: tuple[str, ...] = ("flite:rms",)
    test_unseen_engine_utterances: int = 20
    test_unseen_engine_speakers: int = 3
    test_unseen_text_utterances: int = 20
    held_out_word_fraction: float = 0.1

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
        if not self.engines or "espeak" not in self.engines or not set(self.engines) <= {"espeak", "flite"}:
            raise ValueError(f"engines must be ('espeak',) or ('espeak', 'flite'), got {self.engines}")
        if self.test_unseen_engine_utterances < 0 or self.test_unseen_text_utterances < 0:
            raise ValueError("held-out split sizes must be >= 0")
        if self.test_unseen_engine_utterances and (self.test_unseen_engine_speakers < 1 or not self.unseen_voices):
            raise ValueError("test_unseen_engine needs test_unseen_engine_speakers >= 1 and some unseen_voices")
        if not 0.0 < self.held_out_word_fraction < 1.0:
            raise ValueError(f"held_out_word_fraction must be in (0, 1), got {self.held_out_word_fraction}")
        self.voice_space()  # validates unseen_voices and flite_share
        self.augment_config()  # validates snr_db / reverb_prob overrides

    def utterances(self, split: str) -> int:
        return getattr(self, f"{split}_utterances")

    def speakers(self, split: str) -> int:
        return getattr(self, f"{split}_speakers")

    def splits(self) -> tuple[str, ...]:
        """The splits this config builds: train, dev, test and the held-out ones it asks for."""
        return SPLITS + tuple(s for s in HELD_OUT_SPLITS if self.utterances(s) > 0)

    def augment_config(self) -> AugmentConfig:
        """Noise / reverberation settings: from `difficulty`, with the explicit overrides applied."""
        config = AugmentConfig.for_difficulty(self.difficulty)
        if self.snr_db is not None:
            config = replace(config, snr_db=tuple(float(v) for v in self.snr_db))
        if self.reverb_prob is not None:
            config = replace(config, reverb_prob=float(self.reverb_prob))
        return config

    def voice_space(self) -> VoiceSpace:
        """Voices of train/dev/test: the difficulty's espeak space and flite's voices, minus `unseen_voices`."""
        unseen = [parse_voice(spec) for spec in self.unseen_voices]
        space = VoiceSpace.for_difficulty(self.difficulty)
        variants = tuple(v for v in space.variants if ("espeak", v) not in unseen)
        flite = tuple(v for v in FLITE_VOICES if ("flite", v) not in unseen) if "flite" in self.engines else ()
        if "flite" in self.engines and not flite:
            raise ValueError("every flite voice is in unseen_voices: leave one for training or drop flite from engines")
        return replace(space, variants=variants, flite_voices=flite, flite_share=self.flite_share if flite else 0.0)

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("snr_db", "engines", "unseen_voices"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> CorpusConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown CorpusConfig field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        for name in ("snr_db", "engines", "unseen_voices"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
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
        profile="default",
        train_utterances=4400,
        dev_utterances=420,
        test_utterances=420,
        train_speakers=80,
        dev_speakers=10,
        test_speakers=10,
        difficulty=0.2,
        lexicon_fraction=0.2,
        test_unseen_engine_utterances=200,
        test_unseen_engine_speakers=6,
        test_unseen_text_utterances=200,
    ),
    # closer to a real small corpus: >= 30 h train
    "full": CorpusConfig(
        profile="full",
        train_utterances=44000,
        dev_utterances=1500,
        test_utterances=1500,
        train_speakers=200,
        dev_speakers=20,
        test_speakers=20,
        test_unseen_engine_utterances=1000,
        test_unseen_engine_speakers=12,
        test_unseen_text_utterances=1000,
    ),
}


def with_available_engines(config: CorpusConfig) -> CorpusConfig:
    """`config` as this machine can build it: without flite (and with espeak's Klatt variants as the
    unseen voices) when flite is missing, saying so in a warning; unchanged otherwise."""
    from kdlab.data.synthesis import available_engines

    uses_flite = "flite" in config.engines or any(spec.startswith("flite:") for spec in config.unseen_voices)
    if not uses_flite or "flite" in available_engines():
        return config
    from kdlab.data.flite import MISSING

    warnings.warn(MISSING, stacklevel=2)
    unseen = tuple(spec for spec in config.unseen_voices if not spec.startswith("flite:")) or ESPEAK_UNSEEN_VOICES
    return replace(config, engines=("espeak",), unseen_voices=unseen)


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
    """True if `folder` holds a finished build of exactly this config (as this machine builds it:
    `with_available_engines`)."""
    marker = _read_marker(Path(folder))
    return bool(marker and marker.get("complete") and marker.get("digest") == with_available_engines(config).digest())


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
        for name in (*(f"{split}.jsonl" for split in ALL_SPLITS), "corpus.json"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def _plan(config: CorpusConfig) -> tuple[dict[str, list[str]], dict[str, list[Voice]]]:
    """Sentences and speakers per split (held-out splits are drawn first)."""
    from kdlab.data.grammar import default_grammar, split_sentences

    kept, held_out = default_grammar().split_lexicon(config.held_out_word_fraction)
    grammar = kept.with_lexicon(config.lexicon_fraction)
    order = [s for s in ("test", "dev", "test_unseen_engine", "train") if s in config.splits()]
    sentences = split_sentences(
        {s: config.utterances(s) for s in order}, config.seed, config.min_words, config.max_words, grammar
    )
    space = config.voice_space()
    speakers = make_speakers({s: config.speakers(s) for s in ("test", "dev", "train")}, config.seed, space)
    if "test_unseen_engine" in sentences:
        speakers["test_unseen_engine"] = unseen_voice_speakers(
            config.unseen_voices, config.test_unseen_engine_speakers, config.seed, space
        )
    if "test_unseen_text" in config.splits():
        sentences["test_unseen_text"] = _unseen_text_sentences(config, held_out, kept.vocabulary())
        speakers["test_unseen_text"] = speakers["test"]
    return sentences, speakers


def _unseen_text_sentences(config: CorpusConfig, grammar, known: set[str]) -> list[str]:
    """`test_unseen_text_utterances` distinct sentences of the held-out lexicon, each with at least one
    word outside `known` (the vocabulary of every other split)."""
    import random

    rng = random.Random(f"kdlab-unseen-text-{config.seed}")
    chosen: dict[str, None] = {}
    for _ in range(100 * config.test_unseen_text_utterances + 1000):
        text = grammar.sentence(rng, config.min_words, config.max_words)
        if any(word not in known for word in text.split()):
            chosen.setdefault(text)
        if len(chosen) == config.test_unseen_text_utterances:
            return list(chosen)
    raise ValueError("the held-out lexicon ran out of distinct sentences; ask for fewer test_unseen_text_utterances")


@lru_cache(maxsize=4)
def _babble_bank(config: CorpusConfig, split: str) -> tuple[np.ndarray, ...]:
    """Clean clips of the split's own speakers saying the split's own sentences (babble noise)."""
    from kdlab.data.synthesis import synthesize

    sentences, speakers = _plan(config)
    rng = np.random.default_rng([config.seed, ALL_SPLITS.index(split), _BABBLE_STREAM, 0])
    texts, voices = sentences[split], speakers[split]
    return tuple(
        synthesize(texts[int(rng.integers(len(texts)))], voices[int(rng.integers(len(voices)))])
        for _ in range(config.babble_clips)
    )


def _render(task: tuple[CorpusConfig, str, str, list[tuple[int, str, Voice]]]) -> list[tuple[float, float | None]]:
    """Worker: synthesise, augment and write one chunk of utterances; returns (duration, snr) each."""
    import soundfile

    from kdlab.data.augment import augment
    from kdlab.data.synthesis import synthesize

    config, folder, split, jobs = task
    augment_config = config.augment_config()
    results = []
    for index, text, voice in jobs:
        rng = np.random.default_rng([config.seed, ALL_SPLITS.index(split), _UTTERANCE_STREAM, index])
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
    `workers` processes (1 = in this process). A config that needs flite on a machine without it
    is built as `with_available_engines(config)`, with a warning. Returns the folder.
    """
    from tqdm.auto import tqdm

    from kdlab.data.manifest import Utterance, write_manifest

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = with_available_engines(config)
    folder = Path(out_dir) if out_dir is not None else default_dir(config)
    if is_complete(folder, config):
        return folder
    _prepare_folder(folder)
    _write_marker(folder, config.digest(), complete=False)
    sentences, speakers = _plan(config)
    tasks = []
    for split in config.splits():
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

    utterances: dict[str, list[Utterance]] = {split: [] for split in config.splits()}
    engine_seconds: dict[str, dict[str, list]] = {split: {} for split in config.splits()}
    for (_, _, split, jobs), output in zip(tasks, outputs):
        for (index, text, voice), (duration, snr) in zip(jobs, output):
            path = str(_audio_path(folder, split, index).resolve())
            utterances[split].append(Utterance(_utterance_id(split, index), path, text, voice.name, duration, snr))
            engine_seconds[split].setdefault(voice.engine, []).append((voice.name, duration))
    for split in config.splits():
        write_manifest(folder / f"{split}.jsonl", utterances[split])
    info = {
        "format": FORMAT_VERSION,
        "digest": config.digest(),
        "config": config.to_dict(),
        "augment": config.augment_config().to_dict(),
        "speakers": {split: [v.to_dict() | {"name": v.name} for v in speakers[split]] for split in config.splits()},
        "summary": corpus_summary(folder) | {"engines": _engine_summary(engine_seconds)},
    }
    (folder / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    _write_marker(folder, config.digest(), complete=True)
    return folder


def _engine_summary(engine_seconds: Mapping[str, Mapping[str, list]]) -> dict:
    """split -> engine -> utterances, hours, speakers, from (speaker, seconds) pairs."""
    return {
        split: {
            engine: {
                "utterances": len(pairs),
                "hours": round(sum(d for _, d in pairs) / 3600, 4),
                "speakers": len({name for name, _ in pairs}),
            }
            for engine, pairs in sorted(engines.items())
        }
        for split, engines in engine_seconds.items()
    }


def corpus_summary(folder: str | Path) -> dict:
    """Per split (train, dev, test and the held-out splits the folder has): utterances, hours,
    speakers, mean seconds, mean SNR; plus the vocabulary size (distinct words over train, dev and
    test). Reads the manifests of `folder`."""
    from kdlab.data.manifest import read_manifest

    folder = Path(folder)
    splits, words = {}, set()
    for split in (s for s in ALL_SPLITS if s in SPLITS or (folder / f"{s}.jsonl").is_file()):
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
        if split in SPLITS:
            words.update(w for u in utterances for w in u.text.split())
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
