"""Can CTC align a tokenizer's labels at an encoder frame rate?

A CTC path emits each label in a frame of its own and needs a blank between two equal labels in a
row, so an utterance of U labels with R adjacent repeats needs at least U + R encoder frames. With
fewer, its CTC loss is infinite (zeroed by ``zero_infinity``: the utterance silently trains
nothing). Characters at 80 ms frames fail for most utterances; BPE pieces or 40 ms frames fit
(measured on the default corpus: docs/teacher_calibration.md).

    fraction = unalignable_fraction(utterances, tokenizer, encoder_frames)   # encoder_frames(seconds) -> T'
    check_ctc_alignable(utterances, tokenizer, encoder_frames, frame_ms=80)  # ValueError above 1 %
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kdlab.data.manifest import Utterance
from kdlab.data.tokenizer import Tokenizer

#: The share of training utterances CTC may fail to align before a run refuses to start.
MAX_UNALIGNABLE_FRACTION = 0.01


def ctc_frames_needed(ids: Sequence[int]) -> int:
    """Fewest encoder frames a CTC path over label ids needs: one per label plus one blank per repeat."""
    repeats = sum(1 for previous, current in zip(ids, ids[1:]) if previous == current)
    return len(ids) + repeats


def unalignable_fraction(
    utterances: Sequence[Utterance], tokenizer: Tokenizer, encoder_frames: Callable[[float], int]
) -> float:
    """Share of `utterances` whose transcript needs more CTC frames than `encoder_frames(duration)` gives."""
    if not utterances:
        return 0.0
    short = sum(1 for u in utterances if ctc_frames_needed(tokenizer.encode(u.text)) > encoder_frames(u.duration))
    return short / len(utterances)


def check_ctc_alignable(
    utterances: Sequence[Utterance], tokenizer: Tokenizer, encoder_frames: Callable[[float], int], frame_ms: int
) -> None:
    """Raise ValueError when more than ``MAX_UNALIGNABLE_FRACTION`` of `utterances` cannot be CTC-aligned."""
    fraction = unalignable_fraction(utterances, tokenizer, encoder_frames)
    if fraction > MAX_UNALIGNABLE_FRACTION:
        name = type(tokenizer).__name__
        raise ValueError(
            f"{fraction:.0%} of the training utterances have more CTC labels ({name}, {tokenizer.vocab_size} symbols) "
            f"than {frame_ms} ms encoder frames, so CTC cannot align them; use BPE pieces (--tokenizer bpe:128) or a "
            "lower subsampling factor"
        )
