"""Reading a compression run's history for the figures (``gate_figures``, ``rank_figures``,
``curve_figures``).

**Expected shape.** A history is a list of record dicts: the trainer's ``history.json``, a
``kdlab.train.history.History``, or a path to such a JSON file (``as_records`` accepts all
three). Every key is optional except ``step``; a builder uses the records that carry the keys it
plots and ignores the rest (records without ``step`` are ignored everywhere):

    {
      "step": 120,                         # int, optimizer steps done (x axis of every curve)
      "kind": "train",                     # optional: "train" | "record" | "eval" (trainer kinds)
      "target_sparsity": 0.31,             # t(step), the ramped target
      "expected_sparsity": 0.29,           # ŝ = 1 − E[params] / params₀
      "lambda1": 0.8, "lambda2": 0.1,      # Lagrange multipliers
      "loss": 1.9, "loss_kd": 1.2, ...,    # loss parts: numeric keys whose name contains "loss"
      "gates": {                           # gate name (as in GateSet) -> P(z ≠ 0) per unit
        "blocks.0.attn": [0.99, 0.12, ...],        # (H,) heads
        "blocks.0.ffn1": [...],                    # (ffn_dim,) FFN units; also ffn2
        "blocks.0.conv": [...],                    # (C,) conv channels
        "blocks.0.attn_gate": [0.98],              # () / (1,) branch scalars (a bare float is fine)
        "blocks.0.attn.q_proj": [...],             # (rank,) rank components (LRF + L0)
      },
      "ranks": {"blocks.0.attn.q_proj": 37.5, ...} # matrix name -> expected rank (float)
    }

Values may be ``None`` (or NaN) where a quantity was not measured; such points are skipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Gate names of conformer blocks: ``blocks.<layer>.<structure>``.
BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")
#: Branch gates of a block, in forward order (``blocks.i.<branch>_gate``).
BRANCH_GATES = ("ffn1_gate", "attn_gate", "conv_gate", "ffn2_gate")


def as_records(history) -> list[dict]:
    """The records of ``history``: a list of dicts, a ``History`` (its ``.records``) or a path to a
    history JSON file. Records without an int-like ``step`` are dropped."""
    if isinstance(history, (str, Path)):
        path = Path(history)
        if not path.is_file():
            raise ValueError(f"history file {path} does not exist; give the run's history.json or a list of records")
        history = json.loads(path.read_text())
    records = getattr(history, "records", history)
    if not isinstance(records, Iterable) or isinstance(records, (str, bytes, Mapping)):
        raise ValueError(f"history must be a list of record dicts, a History or a path, got {type(history).__name__}")
    return [dict(r) for r in records if isinstance(r, Mapping) and isinstance(r.get("step"), (int, float))]


def is_number(value) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the finite numeric ``key`` over the records, in order."""
    pairs = [(int(r["step"]), float(r[key])) for r in records if is_number(r.get(key))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def loss_keys(records: list[dict]) -> list[str]:
    """Numeric keys whose name contains "loss", in order of first appearance."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if "loss" in key and is_number(value):
                keys.setdefault(key)
    return list(keys)


def mapping_history(records: list[dict], key: str) -> tuple[list[int], list[dict]]:
    """(steps, dicts) of the records whose ``key`` (e.g. "gates", "ranks") is a non-empty dict."""
    pairs = [(int(r["step"]), r[key]) for r in records if isinstance(r.get(key), Mapping) and r[key]]
    return [s for s, _ in pairs], [m for _, m in pairs]


def split_gate_name(name: str) -> tuple[int | None, str]:
    """``"blocks.3.ffn1"`` -> ``(3, "ffn1")``; a name outside ``blocks.<i>.`` -> ``(None, name)``."""
    match = BLOCK_NAME.match(name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


def as_list(value) -> list[float]:
    """A gate value as a list of floats (a bare number becomes a one-element list; None -> NaN)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [float(v) if is_number(v) else math.nan for v in values]
