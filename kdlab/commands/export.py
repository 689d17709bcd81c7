"""`python -m kdlab export`: a finished run's RNN-T model as ONNX, checked in ONNX Runtime."""

from __future__ import annotations

import argparse

HELP = (
    "export a run's ASR model to ONNX (offline, or one streaming chunk step with explicit caches), "
    "checked in ONNX Runtime"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished fine-tune, sequential or joint run folder")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="export one chunk step of a streaming model, its caches as inputs and outputs",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="encoder file (e.g. model.onnx); FILE.predictor.onnx, FILE.joiner.onnx and FILE.json "
        "are written beside it",
    )


def run(args: argparse.Namespace) -> int:
    from kdlab.deploy.onnx_export import export_onnx
    from kdlab.deploy.run_model import load_run_model

    run = load_run_model(args.run_dir)
    report = export_onnx(run.model, args.out, streaming=args.streaming, tokenizer=run.tokenizer, cmvn=run.cmvn)
    chunk_ms = run.model.encoder.config.chunk_size * 40
    mode = f"streaming chunk step ({chunk_ms} ms chunks)" if args.streaming else "offline"
    print(f"exported {mode} model of {run.run_dir}")
    for role, path in report.files.items():
        diff = report.max_abs_diff.get(role)
        print(f"  {role:9s} {path}" + ("" if diff is None else f"  max |ONNX Runtime - PyTorch| = {diff:.1e}"))
    print(f"check: every graph within {report.tolerance:.0e} of PyTorch")
    return 0
