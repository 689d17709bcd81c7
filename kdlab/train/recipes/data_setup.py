"""Loaders, tokenizer and CMVN of a corpus folder, shared by every recipe.

    data = SpeechData.from_corpus(folder, cmvn_utterances=500)
    train = data.train_loader(max_frames=12000, seed=0, specaugment=SpecAugment())
    dev = data.eval_loader("dev")          # every dev utterance, in a fixed order

Evaluation loaders raise their frame bound to fit the longest utterance and check that the
bucket sampler left none out, so a WER is always measured on the whole split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdlab.data.batching import SpeechLoader, make_loader
from kdlab.data.features import GlobalCMVN, fit_cmvn
from kdlab.data.manifest import Utterance, read_manifest
from kdlab.data.specaugment import SpecAugment
from kdlab.data.tokenizer import Tokenizer
from kdlab.train.recipes.corpus_choice import corpus_tokenizer

SPLITS = ("train", "dev", "test")
#: Read when the corpus has them (the synthesised corpus does): test sets of what train never holds.
HELD_OUT_SPLITS = ("test_unseen_engine", "test_unseen_text")
#: Evaluation batches hold about this many padded frames (more only for one very long utterance).
EVAL_BATCH_FRAMES = 40_000


def feature_cache_dir(corpus_dir: Path) -> Path:
    """Where log-mel features of a corpus are cached: ``data/cache/features/<corpus folder name>``."""
    from kdlab.paths import data_cache

    return data_cache() / "features" / Path(corpus_dir).name


@dataclass
class SpeechData:
    """A corpus folder's splits, its tokenizer and the CMVN fitted on its train split."""

    corpus_dir: Path
    splits: dict[str, list[Utterance]]
    tokenizer: Tokenizer
    cmvn: GlobalCMVN

    @classmethod
    def from_corpus(
        cls, corpus_dir: str | Path, cmvn_utterances: int = 500, cmvn: GlobalCMVN | None = None, tokenizer: str = "char"
    ) -> SpeechData:
        """Read ``train/dev/test.jsonl`` of `corpus_dir` (and the ``HELD_OUT_SPLITS`` it has); fit CMVN on
        `cmvn_utterances` train utterances (evenly spaced) unless `cmvn` is given; `tokenizer`: "char",
        "bpe" or "bpe:N" (``corpus_choice``)."""
        corpus_dir = Path(corpus_dir)
        missing = [s for s in SPLITS if not (corpus_dir / f"{s}.jsonl").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{corpus_dir} has no {', '.join(m + '.jsonl' for m in missing)}; build the corpus "
                "with `python -m kdlab data --profile P` or import your own data"
            )
        present = SPLITS + tuple(s for s in HELD_OUT_SPLITS if (corpus_dir / f"{s}.jsonl").is_file())
        splits = {split: read_manifest(corpus_dir / f"{split}.jsonl") for split in present}
        if cmvn is None:
            cmvn = fit_cmvn(splits["train"], cmvn_utterances)
        return cls(corpus_dir, splits, corpus_tokenizer(corpus_dir, tokenizer), cmvn)

    @property
    def evaluation_splits(self) -> tuple[str, ...]:
        """The splits a finished model is scored on: dev, test and the held-out test sets present."""
        return ("dev", "test") + tuple(s for s in HELD_OUT_SPLITS if s in self.splits)

    def train_loader(self, max_frames: int, seed: int, specaugment: SpecAugment | None = None) -> SpeechLoader:
        """Shuffled, duration-bucketed training batches of at most `max_frames` padded frames."""
        return make_loader(
            self.splits["train"],
            self.tokenizer,
            self.cmvn,
            max_frames=max_frames,
            shuffle=True,
            seed=seed,
            specaugment=specaugment,
            feature_cache_dir=feature_cache_dir(self.corpus_dir),
        )

    def eval_loader(self, split: str, limit: int | None = None, max_frames: int = EVAL_BATCH_FRAMES) -> SpeechLoader:
        """Every utterance of `split` (or its first `limit`) in duration order, none left out."""
        if split not in self.splits:
            raise ValueError(f"split must be one of {tuple(self.splits)}, got {split!r}")
        utterances = self.splits[split][:limit]
        longest = max(u.duration for u in utterances) * 100 + 1
        loader = make_loader(
            utterances,
            self.tokenizer,
            self.cmvn,
            max_frames=max(max_frames, int(longest) + 1),
            shuffle=False,
            feature_cache_dir=feature_cache_dir(self.corpus_dir),
        )
        excluded = loader.batch_sampler.excluded
        if excluded:
            raise RuntimeError(
                f"evaluation loader of {split!r} left out {len(excluded)} utterance(s); "
                "this is a bug: evaluation must see every utterance"
            )
        return loader
