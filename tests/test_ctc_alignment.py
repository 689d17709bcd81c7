"""CTC needs one encoder frame per label plus one per repeat; a run refuses a frame rate too low for its tokenizer."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.ctc_alignment import check_ctc_alignable, ctc_frames_needed, unalignable_fraction
from kdlab.data.manifest import Utterance
from kdlab.data.tokenizer import CharTokenizer


def ctc_loss_with_frames(ids: list[int], frames: int) -> float:
    log_probs = torch.randn(frames, 1, 8).log_softmax(-1)
    return float(F.ctc_loss(log_probs, torch.tensor([ids]), torch.tensor([frames]), torch.tensor([len(ids)]), blank=0))


@pytest.mark.parametrize("ids", [[1, 2, 3], [1, 1, 2], [4, 4, 4, 5], [2, 3, 3, 2]])
def test_frames_needed_is_the_fewest_frames_with_a_finite_ctc_loss(ids):
    needed = ctc_frames_needed(ids)
    assert math.isfinite(ctc_loss_with_frames(ids, needed))
    assert math.isinf(ctc_loss_with_frames(ids, needed - 1))


def utterance(text: str, seconds: float) -> Utterance:
    return Utterance(id=text, audio="unused.wav", text=text, speaker="s", duration=seconds)


def test_characters_at_a_low_frame_rate_are_refused_with_the_remedy():
    tokenizer = CharTokenizer()
    fast = [utterance("the cat sat on the mat", 1.0) for _ in range(5)]  # 22 characters in 1 s
    frames_at = lambda ms: lambda seconds: int(seconds * 1000 / ms)  # noqa: E731
    assert unalignable_fraction(fast, tokenizer, frames_at(40)) == 0.0  # 25 frames
    assert unalignable_fraction(fast, tokenizer, frames_at(80)) == 1.0  # 12 frames
    check_ctc_alignable(fast, tokenizer, frames_at(40), frame_ms=40)
    with pytest.raises(ValueError, match=r"100% .*80 ms.*bpe"):
        check_ctc_alignable(fast, tokenizer, frames_at(80), frame_ms=80)
