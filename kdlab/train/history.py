"""Metric history of a run: a list of flat records, saved as JSON beside the checkpoints.

Each record is a dict with ``kind`` ("train": averages over the steps since the previous
log; "eval": the evaluation callback's result; "record": extra values from the record
callback, e.g. gate probabilities) and ``step`` (optimizer steps done), plus its values.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch


def _jsonable(value):
    """Tensors and NumPy values -> Python numbers / lists; containers recursively."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class History:
    """Ordered list of records; see the module docstring."""

    def __init__(self, records: list[dict] | None = None) -> None:
        self.records: list[dict] = list(records or [])

    def append(self, kind: str, step: int, values: dict) -> dict:
        record = {"kind": kind, "step": int(step), **_jsonable(values)}
        self.records.append(record)
        return record

    def of(self, kind: str) -> list[dict]:
        """Records of one kind, in order."""
        return [r for r in self.records if r["kind"] == kind]

    def series(self, kind: str, key: str) -> tuple[list[int], list]:
        """(steps, values) of `key` over the records of `kind` that have it."""
        pairs = [(r["step"], r[key]) for r in self.of(kind) if key in r]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def last(self, kind: str) -> dict | None:
        records = self.of(kind)
        return records[-1] if records else None

    def save(self, path: str | Path) -> None:
        """Write the records as JSON atomically (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.records, indent=1, allow_nan=True))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls(json.loads(Path(path).read_text()))

    def __len__(self) -> int:
        return len(self.records)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return _same(self.records, other.records)


def _same(a, b) -> bool:
    """Equality that treats NaN == NaN (a skipped-step NaN must not make equal runs differ)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
