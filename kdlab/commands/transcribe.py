"""`python -m kdlab transcribe`: a run's model on audio files; prints each transcript and its real-time factor."""

from __future__ import annotations

import argparse
import sys

HELP = "transcribe audio files with a run's ASR model (PyTorch or ONNX Runtime, offline or streaming, greedy or beam)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished fine-tune, sequential or joint run folder")
    parser.add_argument(
        "audio",
        nargs="+",
        metavar="AUDIO",
        help="audio files (any format soundfile reads; resampled to 16 kHz, downmixed)",
    )
    parser.add_argument("--streaming", action="store_true", help="encode chunk by chunk (a streaming run's model)")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (eager) or onnx (ONNX Runtime; exported into RUN_DIR/onnx/ on first use)",
    )
    parser.add_argument("--beam", type=int, default=None, metavar="N", help="beam search of width N (default: greedy)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the runtime (default: its own)")


def run(args: argparse.Namespace) -> int:
    from kdlab.deploy.run_model import load_run_model
    from kdlab.deploy.transcribe import Transcriber

    transcriber = Transcriber(
        load_run_model(args.run_dir),
        runtime=args.runtime,
        streaming=args.streaming,
        beam=args.beam,
        threads=args.threads,
    )
    failed = 0
    for path in args.audio:
        try:
            result = transcriber.transcribe(path)
        except ValueError as error:  # AudioError names the file and what is wrong with it
            print(f"error: {error}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(
            f"{result.path}: {result.text}  [{result.audio_seconds:.2f} s audio, RTF {result.real_time_factor:.3f}]",
            flush=True,
        )
    search = "greedy" if args.beam is None else f"beam {args.beam}"
    mode = "streaming" if args.streaming else "offline"
    print(
        f"transcribed {len(args.audio) - failed} of {len(args.audio)} file(s) ({args.runtime}, {mode}, {search})",
        flush=True,
    )
    return 1 if failed else 0
