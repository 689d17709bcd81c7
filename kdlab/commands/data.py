"""`python -m kdlab data`: build (or reuse) the embedded synthetic speech corpus and summarise it."""

from __future__ import annotations

import argparse

from kdlab.commands._option_types import non_negative_int, output_folder, positive_int

HELP = (
    "build the embedded espeak-ng speech corpus (cached under data/cache), or import your own "
    "local data (LibriSpeech layout or a JSONL/CSV list), and print its summary"
)

SPLITS = ("train", "dev", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    synthetic = parser.add_argument_group("synthetic corpus")
    synthetic.add_argument(
        "--profile",
        choices=("tiny", "default", "full"),
        default="default",
        help="corpus size: tiny (tests, seconds), default (>= 3 h train, ~1-2 min), full (>= 30 h)",
    )
    synthetic.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed; same seed => identical corpus (default: 0)"
    )
    synthetic.add_argument(
        "--difficulty",
        type=float,
        default=None,
        help="override the profile's difficulty in [0, 1] (noise, reverberation, accents, rates)",
    )
    own = parser.add_argument_group("your own data (nothing is downloaded; writes train/dev/test.jsonl into --out)")
    own.add_argument(
        "--librispeech",
        metavar="ROOT",
        default=None,
        help="a local LibriSpeech-layout folder: <subset>/<speaker>/<chapter>/*.flac + .trans.txt",
    )
    for split, default in zip(SPLITS, ("train-clean-100", "dev-clean", "test-clean")):
        own.add_argument(
            f"--{split}-subsets",
            nargs="+",
            default=[default],
            metavar="SUBSET",
            help=f"LibriSpeech subset folder(s) for the {split} split (default: {default})",
        )
    for split in SPLITS:
        own.add_argument(
            f"--{split}-list",
            metavar="FILE",
            default=None,
            help=f"a JSONL (path/audio + text) or CSV (path,text header) list for the {split} split",
        )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=output_folder, default=None, help="corpus folder (default: data/cache/<profile>-<config hash>)"
    )
    output.add_argument("--workers", type=positive_int, default=2, help="worker processes (default: 2)")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def format_summary(summary: dict, folder) -> str:
    """Human-readable table of `kdlab.data.corpus.corpus_summary` output."""
    lines = [
        f"corpus: {folder}",
        f"{'split':<18} {'utts':>6} {'hours':>7} {'speakers':>8} {'mean s':>7} {'mean SNR':>8}",
    ]
    for split, s in summary["splits"].items():
        snr = "-" if s["mean_snr_db"] is None else f"{s['mean_snr_db']:.1f} dB"
        lines.append(
            f"{split:<18} {s['utterances']:>6} {s['hours']:>7.3f} {s['speakers']:>8} {s['mean_seconds']:>7.2f} {snr:>8}"
        )
    lines.append(
        f"total: {summary['utterances']} utterances, {summary['hours']:.3f} h; "
        f"vocabulary: {summary['vocabulary']} words"
    )
    return "\n".join(lines)


def import_own_data(args: argparse.Namespace):
    """Read the user's local data into `<out>/{train,dev,test}.jsonl`; returns the folder.

    Every split must be given; unreadable files and empty transcripts are skipped and counted
    (the report is printed), malformed list lines raise an error naming the file and line.
    """
    from pathlib import Path

    from kdlab.data.own_data import import_dataset, read_librispeech, read_plain_manifest
    from kdlab.data.transcript_policy import policy_summary

    lists = {split: getattr(args, f"{split}_list") for split in SPLITS}
    if args.librispeech and any(lists.values()):
        raise ValueError("use either --librispeech or the --train/--dev/--test-list options, not both")
    if not args.librispeech and not all(lists.values()):
        missing = [f"--{split}-list" for split, path in lists.items() if not path]
        raise ValueError(f"importing a list needs all three splits; missing {' '.join(missing)}")
    if args.out is None:
        raise ValueError("importing your own data needs --out DIR (the folder that receives the manifests)")
    out = Path(args.out)
    print(policy_summary())
    for split in SPLITS:
        if args.librispeech:
            utterances, report = read_librispeech(args.librispeech, getattr(args, f"{split}_subsets"))
        else:
            utterances, report = read_plain_manifest(lists[split])
        print(f"{split}: {report.summary()}")
        import_dataset(utterances, out, split)
    return out


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kdlab.data.corpus import build_corpus, corpus_summary, profile_config

    if args.librispeech or any(getattr(args, f"{split}_list") for split in SPLITS):
        folder = import_own_data(args)
        print(format_summary(corpus_summary(folder), folder))
        return 0
    config = profile_config(args.profile, args.seed)
    if args.difficulty is not None:
        config = replace(config, difficulty=args.difficulty)
    folder = build_corpus(config, args.out, progress=not args.no_progress, workers=args.workers)
    print(format_summary(corpus_summary(folder), folder))
    return 0
