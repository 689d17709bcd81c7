"""`python -m kdlab data`: build (or reuse) the embedded synthetic speech corpus and summarise it."""

from __future__ import annotations

import argparse

HELP = "build the embedded espeak-ng speech corpus (cached under data/cache) and print its summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    synthetic = parser.add_argument_group("synthetic corpus")
    synthetic.add_argument("--profile", choices=("tiny", "default", "large"), default="default",
                           help="corpus size: tiny (tests, seconds), default (>= 3 h train, ~1-2 min), large (>= 30 h)")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed; same seed => identical corpus (default: 0)")
    synthetic.add_argument("--difficulty", type=float, default=None,
                           help="override the profile's difficulty in [0, 1] (noise, reverberation, accents, rates)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="corpus folder (default: data/cache/<profile>-<config hash>)")
    output.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def format_summary(summary: dict, folder) -> str:
    """Human-readable table of `kdlab.data.corpus.corpus_summary` output."""
    lines = [f"corpus: {folder}", f"{'split':<6} {'utts':>6} {'hours':>7} {'speakers':>8} {'mean s':>7} {'mean SNR':>8}"]
    for split, s in summary["splits"].items():
        snr = "-" if s["mean_snr_db"] is None else f"{s['mean_snr_db']:.1f} dB"
        lines.append(f"{split:<6} {s['utterances']:>6} {s['hours']:>7.3f} {s['speakers']:>8} {s['mean_seconds']:>7.2f} {snr:>8}")
    lines.append(f"total: {summary['utterances']} utterances, {summary['hours']:.3f} h; vocabulary: {summary['vocabulary']} words")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kdlab.data.corpus import build_corpus, corpus_summary, profile_config

    config = profile_config(args.profile, args.seed)
    if args.difficulty is not None:
        config = replace(config, difficulty=args.difficulty)
    folder = build_corpus(config, args.out, progress=not args.no_progress, workers=args.workers)
    print(format_summary(corpus_summary(folder), folder))
    return 0
