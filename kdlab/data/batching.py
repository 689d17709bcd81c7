"""From manifest records to padded, duration-bucketed batches.

- `SpeechDataset[i]` loads audio, computes log-mel features (optionally cached on disk),
  applies CMVN then SpecAugment, encodes the text; a bad item (unreadable audio, empty or
  untokenizable transcript) gives `None` and is counted in `dataset.skipped` (reason ->
  count, each bad utterance once) with its file and the error in `dataset.skipped_files`.
- `BucketBatchSampler` groups utterances of similar duration so that
  batch size x longest utterance <= `max_frames_per_batch` (padded frames), deterministic
  per (seed, epoch), optionally sharded over `num_replicas` processes (torchrun).
- `collate` pads items into a `Batch`; `make_loader` wires everything into a `SpeechLoader`,
  which never yields an empty batch and brings skip counts back from worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from kdlab.data.audio_io import AudioError, load_audio
from kdlab.data.features import FbankConfig, GlobalCMVN, compute_fbank
from kdlab.data.manifest import Utterance
from kdlab.data.specaugment import SpecAugment
from kdlab.data.tokenizer import Tokenizer, normalize_text


@dataclass
class Batch:
    """A padded batch. features `(B, T, F)` float32, feature_lengths `(B,)` int64,
    tokens `(B, U)` int64 padded with 0 (the blank), token_lengths `(B,)` int64."""

    features: torch.Tensor
    feature_lengths: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor
    texts: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Copy of the batch with every tensor on `device`."""

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.features),
            move(self.feature_lengths),
            move(self.tokens),
            move(self.token_lengths),
            list(self.texts),
            list(self.ids),
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for faster host-to-GPU copies."""
        return Batch(
            self.features.pin_memory(),
            self.feature_lengths.pin_memory(),
            self.tokens.pin_memory(),
            self.token_lengths.pin_memory(),
            self.texts,
            self.ids,
        )


class SpeechDataset(Dataset):
    """Items `{"id", "text" (normalised), "features" (T, F) float32, "tokens" (U,) int64}` or None.

    features = SpecAugment(CMVN(log-mel(audio))); SpecAugment is seeded from
    (seed, epoch, index) so the masks do not depend on worker count or order.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        tokenizer: Tokenizer,
        cmvn: GlobalCMVN | None = None,
        specaugment: SpecAugment | None = None,
        feature_cache_dir: str | Path | None = None,
        fbank_config: FbankConfig = FbankConfig(),
        seed: int = 0,
    ):
        self.utterances = list(utterances)
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.specaugment = specaugment
        self.fbank_config = fbank_config
        self.feature_cache_dir = None if feature_cache_dir is None else Path(feature_cache_dir)
        if self.feature_cache_dir is not None:
            self.feature_cache_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.epoch = 0
        self.skipped: Counter[str] = Counter()
        self.skipped_files: dict[str, list[str]] = {}
        self._bad: dict[int, str] = {}
        self._pending: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        """Choose the SpecAugment masks of this epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict | None:
        if index in self._bad:
            return None
        utt = self.utterances[index]
        try:
            tokens = self.tokenizer.encode(utt.text)
        except ValueError as error:
            return self._skip(index, "unsupported_characters", f"{utt.audio}: {error}")
        if not tokens:
            detail = f"{utt.audio}: transcript {utt.text!r} is empty after normalisation"
            return self._skip(index, "empty_transcript", detail)
        try:
            features = self._features(utt.audio)
        except AudioError as error:
            return self._skip(index, error.reason, str(error))
        if self.cmvn is not None:
            features = self.cmvn(features)
        if self.specaugment is not None:
            features = self.specaugment(features, seed=self._item_seed(index))
        return {
            "id": utt.id,
            "text": normalize_text(utt.text),
            "features": features,
            "tokens": torch.tensor(tokens, dtype=torch.int64),
        }

    def skip_summary(self) -> str:
        """One line for logs: how many utterances were skipped, why, and a first example each."""
        if not self.skipped:
            return "skipped 0 utterances"
        parts = [f"{reason} {n} (e.g. {self.skipped_files[reason][0]})" for reason, n in sorted(self.skipped.items())]
        return f"skipped {sum(self.skipped.values())} utterances: " + "; ".join(parts)

    def record_skips(self, skips: list[tuple[int, str, str]]) -> None:
        """Merge skips seen elsewhere (a worker process' copy); each index counts once."""
        for index, reason, detail in skips:
            self._record(index, reason, detail)

    def drain_pending(self) -> list[tuple[int, str, str]]:
        """Skips recorded since the last call, as (index, reason, detail)."""
        pending, self._pending = self._pending, []
        return pending

    def _skip(self, index: int, reason: str, detail: str) -> None:
        """Record a bad item (once per index) and return None, the dataset's answer for it."""
        if self._record(index, reason, detail):
            self._pending.append((index, reason, detail))
        return None

    def _record(self, index: int, reason: str, detail: str) -> bool:
        if index in self._bad:
            return False
        self._bad[index] = reason
        self.skipped[reason] += 1
        self.skipped_files.setdefault(reason, []).append(detail)
        return True

    def _item_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def _features(self, audio: str) -> torch.Tensor:
        """Log-mel `(T, F)` of one file, through the on-disk cache when one is set."""
        if self.feature_cache_dir is None:
            return self._compute(audio)
        try:
            stat = os.stat(audio)
        except OSError:
            return self._compute(audio)  # load_audio raises the precise AudioError
        key = json.dumps([str(Path(audio).resolve()), stat.st_size, stat.st_mtime_ns, self.fbank_config.to_dict()])
        # .npy: a raw array reads ~3x faster than a torch.save zip, a cost paid per utterance per step
        path = self.feature_cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"
        if path.is_file():
            try:
                return torch.from_numpy(np.load(path, allow_pickle=False))
            except (EOFError, OSError, ValueError):
                pass  # damaged cache entry (e.g. an interrupted run): recompute and overwrite
        features = self._compute(audio)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as file:
            np.save(file, features.numpy(), allow_pickle=False)
        os.replace(tmp, path)
        return features

    def _compute(self, audio: str) -> torch.Tensor:
        return compute_fbank(load_audio(audio, self.fbank_config.sample_rate), self.fbank_config)


def collate(items: Sequence[dict | None], n_mels: int = FbankConfig.n_mels) -> Batch:
    """Pad dataset items into a `Batch`; `None` items (skipped utterances) are dropped.

    An all-None list gives an empty batch (B = 0) with features `(0, 0, n_mels)`.
    """
    items = [item for item in items if item is not None]
    if not items:
        empty = torch.zeros(0, dtype=torch.int64)
        return Batch(torch.zeros(0, 0, n_mels), empty, torch.zeros(0, 0, dtype=torch.int64), empty.clone(), [], [])
    return Batch(
        features=pad_sequence([item["features"] for item in items], batch_first=True),
        feature_lengths=torch.tensor([item["features"].shape[0] for item in items], dtype=torch.int64),
        tokens=pad_sequence([item["tokens"] for item in items], batch_first=True, padding_value=0),
        token_lengths=torch.tensor([item["tokens"].shape[0] for item in items], dtype=torch.int64),
        texts=[item["text"] for item in items],
        ids=[item["id"] for item in items],
    )


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with batch size x longest utterance <= `max_frames_per_batch`.

    Each epoch sorts utterances by duration (when shuffling, durations get +-`jitter` random
    relative noise first so batches differ between epochs), packs them greedily and shuffles
    the batch order; everything is a function of (seed, epoch). Utterances longer than
    `max_frames_per_batch` alone are left out (listed in `excluded`, with a warning).
    With `num_replicas > 1`, `max_frames_per_batch` bounds the batch of one step over all ranks: the
    epoch is packed into batches of at most max_frames_per_batch / num_replicas frames, every rank
    gets the same number of them (the list is padded by repeating its first batches) and rank r takes
    batches r, r + num_replicas, ... (so 1 or N processes train on batches of the same total size).
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_frames_per_batch: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        frames_per_second: float = FbankConfig().frames_per_second,
        jitter: float = 0.1,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if max_frames_per_batch <= 0:
            raise ValueError(f"max_frames_per_batch must be positive, got {max_frames_per_batch}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        durations = np.asarray(durations, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(durations) | (durations < 0))
        if bad.size:
            raise ValueError(f"durations must be finite and >= 0; index {bad[0]} has {durations[bad[0]]}")
        self.frames = np.floor(durations * frames_per_second + 1e-6).astype(np.int64) + 1
        self.max_frames = max_frames_per_batch
        self.excluded = np.flatnonzero(self.frames > max_frames_per_batch).tolist()
        if self.excluded:
            warnings.warn(
                f"{len(self.excluded)} utterance(s) are longer than max_frames_per_batch={max_frames_per_batch} "
                f"(longest {self.frames.max()} frames) and are left out; raise max_frames_per_batch to keep them",
                stacklevel=2,
            )
        self._included = np.flatnonzero(self.frames <= max_frames_per_batch)
        self.shuffle, self.seed, self.drop_last, self.jitter = shuffle, seed, drop_last, jitter
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, num_replicas: int, rank: int) -> None:
        """From now on yield only the batches of `rank` of `num_replicas` (the trainer under torchrun)."""
        if not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.num_replicas, self.rank, self._cache = num_replicas, rank, None

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._make_batches())
        return self._cache[1]

    def _make_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        frames = self.frames[self._included]
        key = frames * (1.0 + self.jitter * rng.uniform(-1.0, 1.0, len(frames))) if self.shuffle else frames
        order = self._included[np.argsort(key, kind="stable")]
        budget = self.max_frames // self.num_replicas  # per rank: the step's batch is split over the ranks
        batches, batch, longest = [], [], 0
        for index in order.tolist():
            longest_if_added = max(longest, int(self.frames[index]))
            if batch and longest_if_added * (len(batch) + 1) > budget:
                batches.append(batch)
                batch, longest_if_added = [], int(self.frames[index])
            batch.append(index)
            longest = longest_if_added
        if batch and not self.drop_last:
            batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.num_replicas > 1 and batches:
            short = -len(batches) % self.num_replicas
            batches = batches + [batches[i % len(batches)] for i in range(short)]
            batches = batches[self.rank :: self.num_replicas]
        return batches


class _CollateWithSkips:
    """Collate that also hands over the skips its (possibly worker-local) dataset recorded."""

    def __init__(self, dataset: SpeechDataset):
        self.dataset = dataset

    def __call__(self, items: Sequence[dict | None]) -> tuple[Batch, list[tuple[int, str, str]]]:
        return collate(items, self.dataset.fbank_config.n_mels), self.dataset.drain_pending()


class SpeechLoader(DataLoader):
    """DataLoader over a `SpeechDataset` with a `BucketBatchSampler`: call `set_epoch(e)`
    before each epoch; empty batches (all items bad) are not yielded; skip counts from
    worker processes are merged into `dataset.skipped`."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        for batch, skips in super().__iter__():
            self.dataset.record_skips(skips)
            if len(batch):
                yield batch


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(
    utterances: Sequence[Utterance],
    tokenizer: Tokenizer,
    cmvn: GlobalCMVN | None = None,
    max_frames: int = 20000,
    shuffle: bool = True,
    seed: int = 0,
    specaugment: SpecAugment | None = None,
    num_workers: int = 0,
    *,
    feature_cache_dir: str | Path | None = None,
    fbank_config: FbankConfig = FbankConfig(),
    drop_last: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
) -> SpeechLoader:
    """A `SpeechLoader` yielding `Batch`es of at most `max_frames` padded frames.

    Durations come from the manifest (`Utterance.duration`), so building the loader reads no audio.
    """
    dataset = SpeechDataset(utterances, tokenizer, cmvn, specaugment, feature_cache_dir, fbank_config, seed)
    sampler = BucketBatchSampler(
        [u.duration for u in dataset.utterances],
        max_frames,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        frames_per_second=fbank_config.frames_per_second,
        num_replicas=num_replicas,
        rank=rank,
    )
    return SpeechLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_CollateWithSkips(dataset),
        num_workers=num_workers,
        worker_init_fn=_single_thread_worker if num_workers > 0 else None,
    )
