"""`python -m kdlab notebooks`: run the sequenced notebooks headless and publish HTML reports."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROFILES = ("tiny", "default", "full")

HELP = "run notebooks/NN_*.ipynb headless (papermill) into OUT, with HTML reports and OUT/index.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="corpus/study profile injected into every notebook (default: default)",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="inject another parameter (as papermill -p: 5 is a number, None/True/False as in "
        "Python, anything else text); every selected notebook must declare it (see --only)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: outputs/ of the checkout, or $KDLAB_HOME/outputs)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NN", help="run only these notebooks, by number (00) or name (00_corpus)"
    )
    parser.add_argument("--no-html", action="store_true", help="skip the HTML reports (executed .ipynb and index only)")
    parser.add_argument(
        "--copy",
        metavar="DIR",
        default=None,
        help="only copy the lesson notebooks (unexecuted, also from an installed package) into DIR, "
        "e.g. to open them in JupyterLab; existing files are left alone",
    )


def parse_value(text: str):
    """A -p value as papermill reads it: a Python literal (5, 0.3, None, True, ['l0']) or else the text."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def checked_parameters(pairs: list[list[str]], sources) -> dict:
    """{name: value} of the -p pairs; ValueError for a name a selected notebook does not declare (its
    check cell would stop it), or a bad value."""
    import nbformat

    from kdlab.lessons.parameters import check_parameters, declared_parameters

    parameters = {name: parse_value(value) for name, value in pairs}
    for source in sources:
        declared = declared_parameters(nbformat.read(source, as_version=4))
        unknown = sorted(set(parameters) - set(declared))
        if unknown:
            raise ValueError(
                f"unknown notebook parameter(s) {', '.join(unknown)} for {source.stem}, which declares "
                f"{', '.join(declared)}; choose the notebooks with --only"
            )
    check_parameters(**parameters)
    return parameters


def copy_notebooks(destination: str | Path, sources: list[Path]) -> tuple[list[Path], list[Path]]:
    """Copy `sources` into `destination` (created); returns (copied, skipped because already there)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    copied, skipped = [], []
    for source in sources:
        target = destination / source.name
        if target.exists():
            skipped.append(target)
        else:
            shutil.copyfile(source, target)
            copied.append(target)
    return copied, skipped


def run(args: argparse.Namespace) -> int:
    from kdlab.report import notebook_runner as nr

    if args.copy is not None:
        copied, skipped = copy_notebooks(args.copy, nr.discover_notebooks(nr.default_notebooks_dir(), args.only))
        print(
            f"{len(copied)} notebook(s) copied to {args.copy}"
            + (f"; kept {len(skipped)} already there: {', '.join(p.name for p in skipped)}" if skipped else "")
        )
        return 0
    from kdlab.paths import outputs_dir

    out_dir = args.out or outputs_dir()
    sources = nr.discover_notebooks(nr.default_notebooks_dir(), args.only)
    if not sources:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {nr.default_notebooks_dir()}")
    parameters = {"profile": args.profile, **checked_parameters(args.parameter, sources)}
    try:
        runs = nr.run_notebooks(sources, out_dir, parameters, html_reports=not args.no_html)
    except nr.NotebookFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from kdlab.report.study_publish import study_index_section

    study = study_index_section(out_dir)
    sections = [nr.key_figures_section(runs, out_dir), nr.notebook_links_section(runs, out_dir)]
    sections = ([study] if study is not None else []) + sections
    index = nr.write_index(out_dir, sections)
    print(f"{len(runs)} notebook(s) executed; index: {index}")
    return 0
