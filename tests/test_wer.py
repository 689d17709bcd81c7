"""WER / CER (jiwer) with empty texts, and the relative WER of the study."""

from __future__ import annotations

import pytest

from kdlab.eval.wer import ErrorCounts, cer, error_counts, relative_wer, wer


def test_wer_counts_substitutions_deletions_insertions_over_the_corpus():
    refs, hyps = ["a b c d", "e f"], ["a x c", "e f g"]
    assert error_counts(refs, hyps) == ErrorCounts(substitutions=1, deletions=1, insertions=1, reference_length=6)
    assert wer(refs, hyps) == pytest.approx(3 / 6)
    assert wer(refs, refs) == 0.0


def test_empty_hypotheses_and_references():
    assert wer(["a b c"], [""]) == 1.0  # all deletions
    assert wer(["a b", ""], ["a b", "x y"]) == 1.0  # 2 insertions over 2 reference words
    with pytest.raises(ValueError, match="all references are empty"):
        wer(["", " "], ["x", ""])


def test_whitespace_is_collapsed_and_cer_counts_characters():
    assert wer([" a  b "], ["a b"]) == 0.0
    assert cer(["ab  c"], ["ab c"]) == 0.0
    assert cer(["abc", "de"], ["abd", "de f"]) == pytest.approx(3 / 5)  # 1 substitution + 2 insertions (" f")


def test_input_errors():
    with pytest.raises(ValueError, match="must pair up"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of strings"):
        wer("a b", "a b")
    with pytest.raises(ValueError, match="unit must be"):
        error_counts(["a"], ["a"], unit="phone")


def test_relative_wer():
    assert relative_wer(10.0, 9.0) == pytest.approx(10.0)
    assert relative_wer(0.2, 0.25) == pytest.approx(-25.0)
    with pytest.raises(ValueError, match="baseline WER > 0"):
        relative_wer(0.0, 0.1)
