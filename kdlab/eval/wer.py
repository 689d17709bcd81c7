"""Word and character error rates (jiwer) and the relative WER of the study.

Rates are fractions (0.05 = 5 %), computed over the whole corpus: (S + D + I) / N with N the
number of reference words (characters). Whitespace is collapsed first; texts should already be
normalised the same way (``kdlab.data.tokenizer.normalize_text``). An empty hypothesis counts
all its reference words as deletions; an empty reference counts all hypothesis words as
insertions. A corpus whose references are all empty has no defined rate (ValueError).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations summed over a corpus; ``reference_length`` = hits + substitutions + deletions."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def rate(self) -> float:
        if self.reference_length == 0:
            raise ValueError("error rate is undefined: all references are empty (0 reference words/characters)")
        return (self.substitutions + self.deletions + self.insertions) / self.reference_length

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


def _clean(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single string {texts[:40]!r}")
    return [" ".join(str(t).split()) for t in texts]


def error_counts(refs: Sequence[str], hyps: Sequence[str], unit: str = "word") -> ErrorCounts:
    """Corpus-level substitutions, deletions, insertions and reference length, per ``unit`` "word" or "char"."""
    refs, hyps = _clean(refs, "refs"), _clean(hyps, "hyps")
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps must pair up, got {len(refs)} references and {len(hyps)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if not refs:
        return ErrorCounts(0, 0, 0, 0)
    out = jiwer.process_words(refs, hyps) if unit == "word" else jiwer.process_characters(refs, hyps)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits + out.substitutions + out.deletions)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate (fraction) of hypotheses against references."""
    return error_counts(refs, hyps, "word").rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate (fraction; spaces count as characters)."""
    return error_counts(refs, hyps, "char").rate


def relative_wer(baseline: float, method: float) -> float:
    """Relative WER improvement in percent: (baseline - method) / baseline x 100 (positive = better)."""
    if baseline <= 0:
        raise ValueError(
            f"relative WER needs a baseline WER > 0, got {baseline} (a perfect baseline leaves nothing to improve)"
        )
    return (baseline - method) / baseline * 100.0
