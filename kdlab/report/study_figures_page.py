"""The study's ``figures.html``: every figure of ``viz.study_figures`` on one page that opens
without a network (plotly.js embedded once in the head, nothing from a CDN).

    write_study_figures(run_study(config))     # <out_dir>/figures.html, as `kdlab study` does
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from kdlab.report.offline_html import figure_html, plotlyjs_script
from kdlab.study.runner import StudyResults
from kdlab.viz.study_figures import pareto_figures, rwer_figure

FIGURES_PAGE = "figures.html"


def study_figures(results: StudyResults) -> dict[str, go.Figure]:
    """{heading: figure}: the Pareto figure of each mode, then the RWER bars when a row has an RWER."""
    figures = {f"Pareto: {mode}": figure for mode, figure in pareto_figures(results.summary).items()}
    if any(r["rwer"] is not None for r in results.summary):
        figures["RWER vs the KD baseline"] = rwer_figure(results.summary)
    return figures


def write_study_figures(results: StudyResults) -> Path:
    """Write ``<results.out_dir>/figures.html`` (``study_figures``) and return its path."""
    path = results.out_dir / FIGURES_PAGE
    write_figures_page(study_figures(results), path, f"kdlab study — profile {results.config.profile}")
    return path


def write_figures_page(figures: dict[str, go.Figure], path: str | Path, title: str = "kdlab study") -> None:
    """One HTML page with every figure (in dict order, each under its key as a heading), plotly.js
    embedded once in the head: it opens without a network."""
    body = "\n".join(f"<h2>{name}</h2>\n{figure_html(figure.to_dict())}" for name, figure in figures.items())
    Path(path).write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
        f"{plotlyjs_script()}\n</head><body>\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    )
