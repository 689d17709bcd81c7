"""Benchmark: build a corpus profile from scratch (temporary folder) and record time and size.

    python benchmarks/corpus.py [--profile default] [--seed 0] [--workers 2]

Writes benchmarks/results/corpus.json (other profiles: corpus-<profile>.json) with the build
seconds, hours / utterances / speakers per split and per synthesis engine and split, the engines
the build used (flite only where installed), vocabulary size, the machine's CPU count and the load
average before and after. The target for the default profile is <= 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from kdlab.data.corpus import build_corpus, profile_config, with_available_engines

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS = {"tiny": 10.0, "default": 120.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("tiny", "default", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    config = with_available_engines(profile_config(args.profile, args.seed))
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="kdlab-corpus-bench-") as tmp:
        start = time.perf_counter()
        folder = build_corpus(config, Path(tmp) / "corpus", progress=True, workers=args.workers)
        seconds = time.perf_counter() - start
        summary = json.loads((folder / "corpus.json").read_text())["summary"]
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    splits = summary["splits"]
    target = TARGET_SECONDS.get(args.profile)
    result = {
        "profile": args.profile,
        "seed": args.seed,
        "config_digest": config.digest(),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "engines": list(config.engines),
        "unseen_voices": list(config.unseen_voices),
        "build_seconds": round(seconds, 1),
        "target_seconds": target,
        "within_target": None if target is None else seconds <= target,
        "hours": {split: s["hours"] for split, s in splits.items()},
        "utterances": {split: s["utterances"] for split, s in splits.items()},
        "speakers": {split: s["speakers"] for split, s in splits.items()},
        "mean_seconds_per_utterance": {split: s["mean_seconds"] for split, s in splits.items()},
        "per_engine": summary["engines"],
        "vocabulary": summary["vocabulary"],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("corpus.json" if args.profile == "default" else f"corpus-{args.profile}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
