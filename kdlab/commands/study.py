"""`python -m kdlab study`: the comparison grid of issue 5 (methods x routes x modes vs the KD baseline)."""

from __future__ import annotations

import argparse

from kdlab.commands._option_types import (
    add_corpus_options,
    add_training_options,
    check_accelerator,
    non_negative_int,
    output_folder,
    positive_int,
)
from kdlab.compress.methods import GRID_METHODS

HELP = (
    "study grid: every compression method by the sequential and the joint route, offline and streaming, "
    "vs the KD baseline, the teacher and a from-scratch model; writes results.{json,csv,md} and figures"
)
PROFILES = ("tiny", "default", "full")
MODES = ("offline", "streaming")
ROUTES = ("sequential", "joint")
#: StudyConfig budgets with an option each (``--compress-steps`` ...), for runs longer or shorter than the profile's.
BUDGET_OPTIONS = {
    "compress_steps": "the task-agnostic compressions of the sequential route",
    "ctc_warmup_steps": "the CTC warm-start of every student's ASR schedule (both routes, KD baselines, scratch)",
    "finetune_steps": "the RNN-T phase of every student's ASR schedule (the joint route's recovery included)",
    "recovery_steps": "the joint route's RNN-T steps on the materialised model (part of --finetune-steps)",
}
#: The options that change what the grid trains or measures, as the README's reproduction command shows them.
RESULT_OPTIONS = (
    "profile",
    "corpus",
    "tokenizer",
    "seeds",
    "target_sparsity",
    "methods",
    "modes",
    "routes",
    "steps",
    *BUDGET_OPTIONS,
    "joint_kd_source",
)
#: Values of result options that the reproduction command leaves out (they are the defaults).
UNSHOWN_DEFAULTS = {"modes": list(MODES), "routes": list(ROUTES), "tokenizer": None, "joint_kd_source": "ssl"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="recipe profile: teacher, corpus and step budgets (default: default)",
    )
    add_corpus_options(parser)
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="seeds 0..N-1 of every run downstream of the (shared) teacher (default: 1)",
    )
    parser.add_argument(
        "--target-sparsity",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="parameter budgets: fractions of the teacher encoder to remove (default: the profile's target_sparsity)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=GRID_METHODS,
        default=None,
        help="compression methods (the KD baseline always runs; default: all, or at the default "
        "profile the four of the paper's claims, without kd+lrf+l0)",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="offline and/or streaming")
    parser.add_argument(
        "--routes",
        nargs="+",
        choices=ROUTES,
        default=list(ROUTES),
        help="sequential (compress the SSL encoder, then fine-tune) and/or joint",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="replace every recipe's step budget by N (smoke runs; CTC warm-starts too; recovery: N // 2)",
    )
    for name, what in BUDGET_OPTIONS.items():
        parser.add_argument(
            _flag(name),
            type=non_negative_int,
            default=None,
            metavar="N",
            help=f"steps of {what} (default: the profile's grid budget; overrides --steps)",
        )
    parser.add_argument(
        "--joint-kd-source",
        choices=("ssl", "finetuned"),
        default="ssl",
        help="the joint route's KD source: the SSL encoder every student starts from (default) or "
        "the fine-tuned teacher of the mode (its rows are labelled kd_source=finetuned)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="audio length of the batch-1 CPU latency measurement of every encoder (default: StudyConfig's)",
    )
    parser.add_argument(
        "--latency-min-time",
        type=float,
        default=None,
        help="seconds of each encoder's timed calls, teacher's and model's, behind each latency median "
        "(default: StudyConfig's)",
    )
    parser.add_argument(
        "--latency-runs",
        type=positive_int,
        default=None,
        help="interleaved rounds behind each latency median (default: StudyConfig's)",
    )
    parser.add_argument("--out", type=output_folder, default=None, help="output folder (default: outputs/study)")
    parser.add_argument(
        "--readme",
        default=None,
        metavar="PATH",
        help="also write the results table into PATH (a README with the kdlab-study-results markers)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="train the runs in N processes side by side, one torch thread each (2 on a 2-core "
        "CPU trains ~1.4x faster than one process); rows are measured afterwards (default: 1)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available), cpu, cuda or cuda:N; with several GPUs and --workers, "
        "auto/cuda put worker i on cuda:(i mod GPUs)",
    )
    parser.add_argument(
        "--gpus-per-run",
        type=positive_int,
        default=1,
        help="train each run data-parallel in K processes (torchrun): one GPU each, worker i on GPUs "
        "i*K .. i*K+K-1 (mod their count); on a CPU, one thread each (default: 1)",
    )
    parser.add_argument("--progress", action="store_true", help="show the recipes' progress bars")
    add_training_options(parser, processes=False)  # --workers parallelises a grid


def study_config(args: argparse.Namespace):
    """The StudyConfig of parsed ``study`` arguments: ``--steps`` sets every budget, the per-recipe
    options then replace theirs; a latency option left out keeps StudyConfig's default."""
    from kdlab.study import StudyConfig
    from kdlab.study.config import uniform_budgets

    options = {} if args.steps is None else uniform_budgets(args.steps)
    options.update({name: getattr(args, name) for name in BUDGET_OPTIONS if getattr(args, name) is not None})
    latency = {
        "latency_seconds": args.latency_seconds,
        "latency_min_time": args.latency_min_time,
        "latency_min_runs": args.latency_runs,
    }  # None: StudyConfig's defaults
    options.update({name: value for name, value in latency.items() if value is not None})
    return StudyConfig(
        args.profile,
        args.seeds,
        args.target_sparsity,
        args.methods,
        args.modes,
        args.routes,
        corpus_dir=args.corpus,
        tokenizer=args.tokenizer,
        joint_kd_source=args.joint_kd_source,
        **options,
    )


def command_line(args: argparse.Namespace) -> str:
    """``python -m kdlab study`` with the options that shaped the results (profile and seeds always)."""
    words = ["python -m kdlab study"]
    for name in RESULT_OPTIONS:
        value = getattr(args, name)
        if value is None or value == UNSHOWN_DEFAULTS.get(name):
            continue
        flag = _flag(name)
        words.append(
            f"{flag} {' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}"
            if isinstance(value, list)
            else f"{flag} {value}"
        )
    return " ".join(words)


def run(args: argparse.Namespace) -> int:
    check_accelerator(args.profile, args.device)
    from kdlab.report.study_figures_page import write_study_figures
    from kdlab.study import run_study

    config = study_config(args)
    results = run_study(
        config,
        args.out,
        device=args.device,
        progress=args.progress,
        workers=args.workers,
        gpus_per_run=args.gpus_per_run,
    )
    write_study_figures(results)
    if args.readme:
        from kdlab.report.study_publish import update_readme

        update_readme(args.readme, results, command_line(args))
    print(f"\nresults: {results.out_dir / 'results.md'} (+ results.json, results.csv, figures.html)")
    for claim in results.claims:
        print(f"- {claim['statement']} (target {claim['target_sparsity']:g}): {claim['verdict']} ({claim['reason']})")
    for name, check in results.checks.items():
        print(f"- check {name}: {'ok' if check['held'] else 'FAILED' if check['held'] is False else 'n/a'}")
    return 0
