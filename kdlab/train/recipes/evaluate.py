"""Transcribe a loader with an RNN-T model and score it (WER / CER over the whole split)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kdlab.eval.wer import cer, wer
from kdlab.models.decoding import decode
from kdlab.models.rnnt import RNNTModel


@dataclass
class Transcripts:
    """Utterance ids, references and hypotheses, in loader order."""

    ids: list[str]
    refs: list[str]
    hyps: list[str]

    def scores(self) -> dict:
        """{"wer", "cer", "utterances"}; rates are fractions."""
        return {"wer": wer(self.refs, self.hyps), "cer": cer(self.refs, self.hyps), "utterances": len(self.ids)}


def transcribe(model: RNNTModel, loader, tokenizer, method: str = "greedy", beam: int = 4) -> Transcripts:
    """Decode every batch of `loader` (greedy: batched; beam: per utterance)."""
    ids, refs, hyps = [], [], []
    for batch in loader:
        hyps += decode(model, batch, tokenizer, method=method, beam=beam)
        ids += batch.ids
        refs += batch.texts
    return Transcripts(ids, refs, hyps)


def transcribe_splits(model: RNNTModel, data, method: str = "greedy", beam: int = 4) -> dict[str, Transcripts]:
    """split -> transcripts for every split of `data.evaluation_splits` (a `SpeechData`)."""
    return {
        split: transcribe(model, data.eval_loader(split), data.tokenizer, method, beam)
        for split in data.evaluation_splits
    }


def write_transcripts(path: str | Path, transcripts: Transcripts) -> None:
    """One JSON line per utterance: id, ref, hyp."""
    rows = zip(transcripts.ids, transcripts.refs, transcripts.hyps)
    Path(path).write_text("".join(json.dumps({"id": i, "ref": r, "hyp": h}) + "\n" for i, r, h in rows))
