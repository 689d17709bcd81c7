"""Synthetic speakers: an espeak-ng English accent x voice variant x speaking rate x pitch.

`make_speakers` draws speaker-disjoint lists per split: every (accent, variant) pair is used
by at most one speaker, so no dev/test speaker shares even its timbre and accent with a
train speaker. `VoiceSpace.for_difficulty` widens accents, variants and rates as the corpus
gets harder.
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
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "klatt4",
    "adam", "benjamin", "david", "edward", "edward2", "grandpa", "gustave", "iven", "iven3",
    "Jacky", "marcelo", "max", "boris", "Michael", "robert", "rob", "quincy", "paul", "travis",
    "victor", "mike2", "ed", "Denis", "Gene", "Lee", "Andy", "Alex", "Mike", "Mario", "antonio", "pedro",
)  # fmt: skip
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "linda", "belinda", "aunty", "grandma", "steph", "steph2",
    "steph3", "anika", "shelby", "Annie", "Andrea", "Alicia",
)  # fmt: skip
# Harder to understand: whispered, creaky, very high pitched.
HARD_VARIANTS = ("whisper", "whisperf", "croak", "zac", "caleb", "iven2")
VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    accent: espeak language name (`ACCENTS`); variant: file name in `voices/!v`;
    rate: words per minute (80..450); pitch: espeak base pitch (0..99).
    """

    accent: str
    variant: str
    rate: int = 170
    pitch: int = 50

    def __post_init__(self) -> None:
        if not 80 <= self.rate <= 450:
            raise ValueError(f"Voice.rate must be 80..450 words per minute, got {self.rate}")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"Voice.pitch must be 0..99, got {self.pitch}")

    @property
    def name(self) -> str:
        """Stable speaker id, safe in file names, e.g. `en-gb-x-rp_m3_r165_p52`."""
        return f"{self.accent}_{self.variant}_r{self.rate}_p{self.pitch}"

    @property
    def espeak_name(self) -> str:
        """Name for `espeak_SetVoiceByName`, e.g. `en-gb-x-rp+m3`."""
        return f"{self.accent}+{self.variant}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "Voice":
        return cls(**data)


@dataclass(frozen=True)
class VoiceSpace:
    """What speakers may be drawn from: accents, variants, rate and pitch ranges (inclusive)."""

    accents: tuple[str, ...] = EASY_ACCENTS + MEDIUM_ACCENTS
    variants: tuple[str, ...] = VARIANTS
    rate_range: tuple[int, int] = (130, 190)
    pitch_range: tuple[int, int] = (25, 75)

    @classmethod
    def for_difficulty(cls, difficulty: float) -> "VoiceSpace":
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


def make_speakers(counts: Mapping[str, int], seed: int, space: VoiceSpace | None = None) -> dict[str, list[Voice]]:
    """Draw `counts[split]` speakers per split with no (accent, variant) pair shared between any two.

    Accents are dealt round-robin, so every split covers the accents about evenly.
    Same arguments => same speakers.
    """
    space = space or VoiceSpace()
    needed = sum(counts.values())
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
    speakers: dict[str, list[Voice]] = {}
    start = 0
    for split, count in counts.items():
        if count < 1:
            raise ValueError(f"each split needs at least one speaker, got {count} for {split!r}")
        speakers[split] = [
            Voice(
                accent,
                variant,
                rate=int(rng.integers(space.rate_range[0], space.rate_range[1] + 1)),
                pitch=int(rng.integers(space.pitch_range[0], space.pitch_range[1] + 1)),
            )
            for accent, variant in pairs[start : start + count]
        ]
        start += count
    return speakers
