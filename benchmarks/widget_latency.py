"""How fast the compression panels answer a control change, at the default encoder size.

What is timed: setting a control's value, whose observer runs ``panel.update()`` (exactly what
moving it in JupyterLab runs, without the browser round trip), for

* ``SparsityPanel`` on ``teacher_config("default")`` with every gate at a random state (seeded):
  prune to the slider's sparsity, materialise, count MACs, time the encoder (its default 4 s input,
  ``measure_latency`` with the panel's default ``min_time_s``); no WER callback (its cost is the
  caller's);
* ``RankPanel`` on the same encoder: rank moves and matrix switches (each a full SVD of the matrix,
  and a switch redraws the spectrum);
* ``HardConcretePanel``: log α / β moves (20 000 samples each).

The panels' construction is timed separately (it is not a slider move). The target is a median
below 2 s per panel. One thread by default (the slowest case on a shared laptop); ``--threads``
changes it.

    python benchmarks/widget_latency.py      # writes benchmarks/results/widget_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from kdlab.compress.structures import attach_gates
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.viz.compression_panels import HardConcretePanel, RankPanel, SparsityPanel

RESULT = Path(__file__).resolve().parent / "results" / "widget_latency.json"
TARGET_S = 2.0


def timed(fn):
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def move(control, value) -> float:
    """Seconds to set ``control.value``: its observer runs the panel's update, as in the browser."""
    return timed(lambda: setattr(control, "value", value))[1]


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "max_s": max(times), "updates": len(times), "times_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="teacher_config preset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    encoder = ConformerEncoder(teacher_config(args.size)).eval()
    generator = torch.Generator().manual_seed(args.seed)
    for gate in attach_gates(encoder).gates.values():
        gate.log_alpha.data = torch.randn(gate.n, generator=generator) * 2 + 1

    construction, updates, errors = {}, {}, {}
    panel, construction["SparsityPanel"] = timed(lambda: SparsityPanel(encoder))
    updates["SparsityPanel"] = [move(panel.slider, s) for s in (0.1, 0.3, 0.5, 0.7, 0.4, 0.2)]
    errors["SparsityPanel"] = "Error" in panel.status.value
    sparsity_values = dict(panel.values)

    panel, construction["RankPanel"] = timed(lambda: RankPanel(encoder, "blocks.0.ffn1.linear1"))
    times = [move(panel.rank, r) for r in (8, 32, 64, 100, 140)]
    times += [
        move(panel.matrix, name)
        for name in ("blocks.3.attn.q_proj", "blocks.5.conv.pointwise1", "blocks.9.ffn2.linear2")
    ]
    updates["RankPanel"] = times
    errors["RankPanel"] = "Error" in panel.status.value

    panel, construction["HardConcretePanel"] = timed(HardConcretePanel)
    times = [move(panel.log_alpha, a) for a in (-3.0, -1.0, 0.5, 2.0, 4.0)]
    times += [move(panel.beta, b) for b in (0.2, 1.0, 1.5)]
    updates["HardConcretePanel"] = times
    errors["HardConcretePanel"] = "Error" in panel.status.value

    result = {
        "what": "seconds for panel.update() after one control change (median over the moves listed in the docstring)",
        "target_median_s": TARGET_S,
        "median_update_s": {name: statistics.median(t) for name, t in updates.items()},
        "all_below_target": all(statistics.median(t) < TARGET_S for t in updates.values()),
        "updates": {name: summary(t) for name, t in updates.items()},
        "construction_s": construction,
        "status_line_showed_an_error": errors,
        "last_sparsity_panel_values": sparsity_values,
        "encoder": teacher_config(args.size).to_dict(),
        "encoder_parameters": encoder.num_parameters(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_update_s", "all_below_target", "construction_s", "threads")}))


if __name__ == "__main__":
    main()
