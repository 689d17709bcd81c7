"""Endless, resumable iteration over a re-iterable data source, epoch after epoch.

``EpochIterator(data, seed)`` yields batches of ``iter(data)`` forever; before epoch ``e``
it calls ``data.set_epoch(e)`` when ``data`` has one (kdlab's ``SpeechLoader``, samplers).
Its state is ``(epoch, position)``: the batches already taken from the current epoch. A
resumed iterator re-creates epoch ``e`` and discards ``position`` batches, so the data order
equals that of an uninterrupted run -- provided the data order is a function of the epoch
(``set_epoch``) and of torch's global RNG at the start of the epoch. For the latter, the
epoch's iterator is created (and its first batch fetched) with torch's CPU generator seeded
from (seed, epoch), inside an isolated RNG block: a ``DataLoader(shuffle=True)`` thus shuffles
reproducibly, and the training RNG streams are untouched by data loading.
Discarding batches on resume loads them (cheap with cached features).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch

from kdlab.train.rng import derived_seed, isolated_rng


class EpochIterator:
    """Infinite batch iterator with a checkpointable position; see the module docstring."""

    def __init__(self, data: Iterable, seed: int = 0) -> None:
        self.data = data
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._iterator: Iterator | None = None

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self):
        for _ in range(2):
            if self._iterator is None:
                self._iterator = self._start_epoch()
            batch = next(self._iterator, _END)
            if batch is not _END:
                self.position += 1
                return batch
            if self.position == 0:
                break
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
        raise ValueError(
            f"the training data yielded no batch in epoch {self.epoch}: check the dataset and sampler "
            "(e.g. every utterance longer than max_frames, or drop_last with too few utterances)"
        )

    def _start_epoch(self) -> Iterator:
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(self.epoch)
        with isolated_rng():
            torch.default_generator.manual_seed(derived_seed(self.seed, self.epoch))
            iterator = iter(self.data)
            for index in range(self.position):
                if next(iterator, _END) is _END:
                    raise ValueError(
                        f"cannot resume at epoch {self.epoch}, batch {self.position}: the data has only "
                        f"{index} batches in this epoch now (did the dataset or batch size change?)"
                    )
            first = next(iterator, _END)
        return iter(()) if first is _END else itertools.chain([first], iterator)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None


_END = object()
