"""What the importer does with a transcript before a tokenizer sees it: normalise, spell out, or reject.

    prepare_transcript("Café, 42!")   # -> "cafe forty two"
    prepare_transcript("I ♥ NY")      # ValueError naming '♥': the utterance is skipped and counted

POLICY is the table the import summary (and the README) shows: what is normalised, what is
spelled out and what makes an utterance be rejected. The check is the tokenizer's own
(`CharTokenizer.encode`; BPE shares its alphabet), so what is imported is what training accepts.
"""

from __future__ import annotations

import re

from kdlab.data.tokenizer import CharTokenizer, normalize_text

POLICY = (
    ("normalise", "case, accents (café -> cafe), typographic apostrophes, punctuation (dashes -> spaces)"),
    ("spell out", "whole numbers standing alone, up to 12 digits (42 -> forty two)"),
    (
        "reject",
        "anything else outside a-z, apostrophe, space (1st, 3.5, 1,000, 50%, $5, ß, CJK): the utterance "
        "is skipped and counted as unsupported_characters",
    ),
)
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
#: A whole number standing alone: not part of a word (1st), a decimal or grouped number (3.5, 1,000),
#: a percentage or an amount ($5, 5€); those keep their digits and are rejected.
_NUMBER = re.compile(r"(?<![\w'.,$€£])\d{1,12}(?![\w'%$€£]|[.,]\d)")
_TOKENIZER = CharTokenizer()


def spell_number(value: int) -> str:
    """English words of 0 <= value < 10**12 (``1990`` -> "one thousand nine hundred ninety")."""
    if not 0 <= value < 10**12:
        raise ValueError(f"can spell out 0 to 10**12 - 1, got {value}")
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + ("" if ones == 0 else f" {_ONES[ones]}")
    for scale, name in _SCALES:
        if value >= scale:
            high, rest = divmod(value, scale)
            return f"{spell_number(high)} {name}" + ("" if rest == 0 else f" {spell_number(rest)}")
    raise AssertionError("unreachable: every value >= 100 has a scale")


def prepare_transcript(text: str) -> str:
    """`text` normalised with its whole numbers spelled out; ValueError (naming the character) when
    anything outside the tokenizer alphabet remains."""
    spelled = normalize_text(_NUMBER.sub(lambda m: f" {spell_number(int(m.group()))} ", text))
    _TOKENIZER.encode(spelled)  # raises ValueError naming the first unsupported character
    return spelled


def policy_summary() -> str:
    """One line: ``transcripts: normalise (...); spell out (...); reject (...)``."""
    return "transcripts: " + "; ".join(f"{action} {what}" for action, what in POLICY)
