"""Publish a finished study beyond ``outputs/study``: a section of ``outputs/index.html`` and the
results table in the README.

    section = study_index_section(outputs_dir)     # None when no study has been run there
    update_readme(Path("README.md"), load_study())  # rewrites the block between the markers

Both show what ``results.md`` shows (the summary table, the claims with their verdicts and the
validity checks), rendered from
``results.json``: nothing is typed by hand.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from kdlab.study.report import checks_table, claims_table, results_table
from kdlab.study.runner import StudyResults, load_study

README_START = "<!-- kdlab-study-results:start -->"
README_END = "<!-- kdlab-study-results:end -->"
STUDY_FOLDER = "study"


def markdown_table_html(lines: list[str]) -> str:
    """A Markdown pipe table (header, separator, rows; as ``report.results_table`` writes) -> HTML."""

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]

    header, rows = cells(lines[0]), [cells(line) for line in lines[2:]]
    head = "".join(f"<th>{c}</th>" for c in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def study_index_section(outputs: str | Path):
    """The "Study results" section of ``index.html`` (summary table, claims, checks, links to the study
    files) when ``<outputs>/study/results.json`` exists, else None."""
    from kdlab.report.notebook_runner import IndexSection

    folder = Path(outputs) / STUDY_FOLDER
    if not (folder / "results.json").is_file():
        return None
    study = load_study(folder)
    links = " · ".join(
        f'<a href="{STUDY_FOLDER}/{name}">{name}</a>'
        for name in ("results.md", "results.csv", "results.json", "figures.html")
        if (folder / name).is_file()
    )
    body = (
        f"<p>Profile <code>{html.escape(study.config.profile)}</code>, {study.config.seeds} seed(s). "
        f"Files: {links}</p>\n{markdown_table_html(results_table(study.summary))}\n"
        f"<h3>The paper's claims</h3>\n{markdown_table_html(claims_table(study.claims))}\n"
        f"<h3>Validity checks</h3>\n{markdown_table_html(checks_table(study.checks))}"
    )
    return IndexSection("Study results", body)


def readme_block(study: StudyResults, command: str) -> str:
    """The README block: the command that produced it, the summary table, the claims and the checks."""
    lines = [
        README_START,
        "",
        f"Produced by `{command}` (profile `{study.config.profile}`, "
        f"{study.config.seeds} seed(s)); the same table is in `outputs/study/results.md`.",
        "",
    ]
    lines += results_table(study.summary) + ["", "The paper's claims, computed from these rows:", ""]
    lines += claims_table(study.claims) + ["", "Validity checks (a claim is undetermined where one fails):", ""]
    lines += checks_table(study.checks) + ["", README_END]
    return "\n".join(lines)


def update_readme(readme: str | Path, study: StudyResults, command: str = "make study") -> None:
    """Replace the block between ``README_START`` and ``README_END`` of `readme` by ``readme_block``."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {README_START} ... {README_END} block to fill")
    path.write_text(pattern.sub(lambda _: readme_block(study, command), text, count=1), encoding="utf-8")
