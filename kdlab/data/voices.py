"""Synthetic speakers: a synthesis engine's voice x speaking rate x pitch.

Two engines: espeak-ng (an English accent x a voice variant: hundreds of timbres from one
formant synthesiser) and flite (a handful of built-in voices, diphone and statistical
parametric). `make_speakers` draws speaker-disjoint lists per split: every espeak (accent,
variant) pair is used by at most one speaker, so no dev/test speaker shares even its timbre
and accent with a train speaker; flite has too few voices for that, so its speakers are
distinct (voice, rate, pitch) triples and the strict test of an unseen voice is the held-out
engine split (`unseen_voice_speakers`). `VoiceSpace.for_difficulty` widens accents, variants
and rates as the corpus gets harder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

# English accents bundled with espeak-ng (espeak language names).
EASY_ACCENTS = ("en-us", "en", "en-gb-x-rp")
MEDIUM_ACCENTS = ("en-gb-scotland", "en-gb-x-gbclan", "en-us-nyc")
HARD_ACCENTS = ("en-029", "en-gb-x-gbcwmd")
ACCENTS = EASY_ACCENTS + MEDIUM_ACCENTS + HARD_ACCENTS

# Voice variants from espeak-ng-data/voices/!v that sound like plain talkers.
MALE_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "adam",
    "benjamin",
    "david",
    "edward",
    "edward2",
    "grandpa",
    "gustave",
    "iven",
    "iven3",
    "Jacky",
    "marcelo",
    "max",
    "boris",
    "Michael",
    "robert",
    "rob",
    "quincy",
    "paul",
    "travis",
    "victor",
    "mike2",
    "ed",
    "Denis",
    "Gene",
    "Lee",
    "Andy",
    "Alex",
    "Mike",
    "Mario",
    "antonio",
    "pedro",
)
FEMALE_VARIANTS = (
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "linda",
    "belinda",
    "aunty",
    "grandma",
    "steph",
    "steph2",
    "steph3",
    "anika",
    "shelby",
    "Annie",
    "Andrea",
    "Alicia",
)
# Harder to understand: whispered, creaky, very high pitched.
HARD_VARIANTS = ("whisper", "whisperf", "croak", "zac", "caleb", "iven2")
VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS

ENGINES = ("espeak", "flite")
# flite 2.2's built-in English voices (without awb_time, a talking clock): the accent each speaks
# and its own mean f0 in Hz, which `pitch` scales (rms keeps its own f0 whatever it is asked).
FLITE_VOICES = {
    "kal": ("en-us", 95.0),
    "kal16": ("en-us", 95.0),
    "awb": ("en-gb-scotland", 130.0),
    "rms": ("en-us", 100.0),
    "slt": ("en-us", 170.0),
}


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    espeak: accent is an espeak language name (`ACCENTS`), variant a file name in `voices/!v`,
    pitch espeak's base pitch (0..99). flite: variant is a `FLITE_VOICES` name, accent the one
    that voice speaks, pitch 0..99 scales its mean f0 by 2^((pitch - 50) / 100).
    rate: words per minute (80..450).
    """

    accent: str
    variant: str
    rate: int = 170
    pitch: int = 50
    engine: str = "espeak"

    @classmethod
    def flite(cls, variant: str, rate: int = 170, pitch: int = 50) -> Voice:
        """A flite speaker (the accent comes with the voice)."""
        if variant not in FLITE_VOICES:
            raise ValueError(f"flite has no voice {variant!r}; choose one of {', '.join(FLITE_VOICES)}")
        return cls(FLITE_VOICES[variant][0], variant, rate, pitch, "flite")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"Voice.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "flite" and self.variant not in FLITE_VOICES:
            raise ValueError(f"flite has no voice {self.variant!r}; choose one of {', '.join(FLITE_VOICES)}")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"Voice.rate must be 80..450 words per minute, got {self.rate}")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"Voice.pitch must be 0..99, got {self.pitch}")

    @property
    def name(self) -> str:
        """Stable speaker id, safe in file names, e.g. `en-gb-x-rp_m3_r165_p52` or `flite_awb_r165_p52`."""
        voice = self.variant if self.engine == "flite" else f"{self.accent}_{self.variant}"
        return f"{'flite_' if self.engine == 'flite' else ''}{voice}_r{self.rate}_p{self.pitch}"

    @property
    def espeak_name(self) -> str:
        """Name for `espeak_SetVoiceByName`, e.g. `en-gb-x-rp+m3`."""
        return f"{self.accent}+{self.variant}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Voice:
        return cls(**data)


@dataclass(frozen=True)
class VoiceSpace:
    """What speakers may be drawn from: espeak accents and variants, flite voices and the share of
    each split's speakers they voice, rate and pitch ranges (inclusive)."""

    accents: tuple[str, ...] = EASY_ACCENTS + MEDIUM_ACCENTS
    variants: tuple[str, ...] = VARIANTS
    rate_range: tuple[int, int] = (130, 190)
    pitch_range: tuple[int, int] = (25, 75)
    flite_voices: tuple[str, ...] = ()
    flite_share: float = 0.0

    def __post_init__(self) -> None:
        unknown = [v for v in self.flite_voices if v not in FLITE_VOICES]
        if unknown:
            raise ValueError(f"unknown flite voice(s) {unknown}; choose from {', '.join(FLITE_VOICES)}")
        if not 0.0 <= self.flite_share <= 1.0:
            raise ValueError(f"flite_share must be in [0, 1], got {self.flite_share}")

    @classmethod
    def for_difficulty(cls, difficulty: float) -> VoiceSpace:
        """0 = three standard accents at ~155 wpm; 0.5 = six accents, 130..190 wpm;
        >= 0.75 adds Caribbean / West Midlands accents and whispered or creaky voices."""
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        accents = EASY_ACCENTS
        if difficulty >= 0.25:
            accents += MEDIUM_ACCENTS
        if difficulty >= 0.75:
            accents += HARD_ACCENTS
        variants = VARIANTS + (HARD_VARIANTS if difficulty >= 0.75 else ())
        rate_range = (round(150 - 40 * difficulty), round(160 + 60 * difficulty))
        pitch_range = (round(40 - 30 * difficulty), round(60 + 30 * difficulty))
        return cls(accents, variants, rate_range, pitch_range)

    def flite_count(self, count: int) -> int:
        """How many of a split's `count` speakers flite voices (none without flite voices)."""
        return round(count * self.flite_share) if self.flite_voices else 0


def make_speakers(counts: Mapping[str, int], seed: int, space: VoiceSpace | None = None) -> dict[str, list[Voice]]:
    """Draw `counts[split]` speakers per split, `space.flite_count` of them flite voices.

    No espeak (accent, variant) pair and no flite (voice, rate, pitch) is shared between any two
    speakers. Accents and flite voices are dealt round-robin, so every split covers them about
    evenly. Same arguments => same speakers.
    """
    space = space or VoiceSpace()
    for split, count in counts.items():
        if count < 1:
            raise ValueError(f"each split needs at least one speaker, got {count} for {split!r}")
    flite_counts = {split: space.flite_count(count) for split, count in counts.items()}
    needed = sum(counts.values()) - sum(flite_counts.values())
    available = len(space.accents) * len(space.variants)
    if needed > available:
        raise ValueError(
            f"{needed} speakers requested but only {available} accent x variant pairs exist; "
            "ask for fewer speakers or add accents/variants to the VoiceSpace"
        )
    rng = np.random.default_rng([seed, 0x5EA4E5])
    per_accent = [
        [(accent, space.variants[i]) for i in rng.permutation(len(space.variants))]
        for accent in (space.accents[i] for i in rng.permutation(len(space.accents)))
    ]
    pairs = [group[i] for i in range(len(space.variants)) for group in per_accent]
    flite_rng = np.random.default_rng([seed, 0xF117E])
    flite_order = [space.flite_voices[i] for i in flite_rng.permutation(len(space.flite_voices))]
    taken: set[Voice] = set()
    speakers: dict[str, list[Voice]] = {}
    start = flite_start = 0
    for split, count in counts.items():
        espeak_count = count - flite_counts[split]
        speakers[split] = [
            Voice(accent, variant, rate=_draw(rng, space.rate_range), pitch=_draw(rng, space.pitch_range))
            for accent, variant in pairs[start : start + espeak_count]
        ]
        start += espeak_count
        for i in range(flite_counts[split]):
            variant = flite_order[(flite_start + i) % len(flite_order)]
            speakers[split].append(_new_voice(flite_rng, space, taken, lambda r, p, v=variant: Voice.flite(v, r, p)))
        flite_start += flite_counts[split]
    return speakers


def unseen_voice_speakers(voices: tuple[str, ...], count: int, seed: int, space: VoiceSpace) -> list[Voice]:
    """`count` speakers dealt round-robin over `voices` ("engine:variant", e.g. "flite:rms"), each a
    distinct (voice, rate, pitch) within `space`'s ranges: the held-out engine voices' test split."""
    if count < 1 or not voices:
        raise ValueError(f"need at least one speaker and one voice, got {count} speakers of {voices}")
    rng = np.random.default_rng([seed, 0x0DD5EE])
    taken: set[Voice] = set()
    made = []
    for i in range(count):
        engine, variant = parse_voice(voices[i % len(voices)])
        if engine == "flite":
            made.append(_new_voice(rng, space, taken, lambda r, p, v=variant: Voice.flite(v, r, p)))
        else:
            accent = space.accents[i % len(space.accents)]
            made.append(_new_voice(rng, space, taken, lambda r, p, a=accent, v=variant: Voice(a, v, r, p)))
    return made


def parse_voice(spec: str) -> tuple[str, str]:
    """ "engine:variant" -> (engine, variant), checked against the engine's voices."""
    engine, _, variant = spec.partition(":")
    if engine not in ENGINES or not variant:
        raise ValueError(f"a voice is written 'engine:variant' with engine in {ENGINES}, got {spec!r}")
    if engine == "flite" and variant not in FLITE_VOICES:
        raise ValueError(f"flite has no voice {variant!r}; choose one of {', '.join(FLITE_VOICES)}")
    if engine == "espeak" and variant not in VARIANTS + HARD_VARIANTS:
        raise ValueError(f"{variant!r} is not one of kdlab's espeak variants (kdlab.data.voices.VARIANTS)")
    return engine, variant


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _new_voice(rng: np.random.Generator, space: VoiceSpace, taken: set, make) -> Voice:
    """`make(rate, pitch)` with a rate and pitch drawn until the voice is new; adds it to `taken`."""
    for _ in range(1000):
        voice = make(_draw(rng, space.rate_range), _draw(rng, space.pitch_range))
        if voice not in taken:
            taken.add(voice)
            return voice
    raise ValueError("ran out of distinct (voice, rate, pitch) speakers; widen the rate or pitch range")
