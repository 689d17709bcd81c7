"""Run the sequenced notebooks headless and publish them as HTML reports.

The lessons live in `notebooks/NN_name.ipynb` (two digits, then a name). `run_notebooks`
executes them in order with papermill, injecting parameters into each notebook's cell tagged
`parameters`, writes the executed copies to `<out>/NN_name.ipynb`, and exports each one to
`<out>/html/NN_name.html` with the widget state and the plotly figures embedded. Reports load
nothing from other hosts, so they open offline without errors (`kdlab.report.offline_html`): widget
panels are drawn statically from their saved state (`kdlab.report.widget_snapshot`), and LaTeX in
markdown is typeset by a MathJax copy beside the reports. `write_index` assembles `<out>/index.html` from a list of
`IndexSection`s: the key figures of every notebook (`key_figures_section`), the notebook
links, and what later parts of the study add (results).

Plotly figures reach the HTML only if the notebook's renderer embeds them: notebooks call
`use_embedded_plotly()` once, which writes the plotly.js bundle into the notebook a single
time (no CDN) and then shows every figure both as plotly's own mimetype (for JupyterLab) and
as HTML (for the report). `export_html` checks this.
"""

from __future__ import annotations

import html
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdlab.paths import notebooks_dir
from kdlab.report.widget_snapshot import WIDGET_VIEW_MIMETYPE
from kdlab.viz.figure_pane import PLOTLY_MIMETYPE

NOTEBOOK_NAME = re.compile(r"^(\d{2})_\w+\.ipynb$")
PREFERRED_KERNEL = "kdlab"
FALLBACK_KERNEL = "python3"
OFFLINE_RENDERER = "kdlab_notebook"
PLOTLY_RENDERER = f"plotly_mimetype+{OFFLINE_RENDERER}"
KEY_FIGURE_TAG = "key-figure"
_PLOTLYJS_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")


class NotebookFailed(RuntimeError):
    """A notebook raised while executing, or its report is incomplete; the message says where."""


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook: its name (`NN_name`), title, output files and execution time."""

    name: str
    title: str
    executed: Path
    html: Path | None
    seconds: float


@dataclass(frozen=True)
class IndexSection:
    """One section of `index.html`: a heading and a block of HTML produced by kdlab (trusted).

    `uses_plotly`: the body draws plotly figures (`kdlab.report.offline_html.figure_html`), so the
    page embeds plotly.js (once, however many sections use it).
    """

    title: str
    body_html: str
    uses_plotly: bool = False

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def default_notebooks_dir() -> Path:
    """The lessons folder (`kdlab.paths.notebooks_dir`): works in a checkout and an installed package."""
    return notebooks_dir()


def discover_notebooks(folder: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Sequenced notebooks `NN_name.ipynb` of `folder`, in order.

    `only`: numbers (`"00"`) or names (`"00_corpus"`) to keep; ValueError names unknown ones.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder not found: {folder}")
    notebooks = sorted(p for p in folder.iterdir() if NOTEBOOK_NAME.match(p.name))
    if not only:
        return notebooks
    chosen = [p for p in notebooks if p.name[:2] in only or p.stem in only]
    matched = {p.name[:2] for p in chosen} | {p.stem for p in chosen}
    unknown = [name for name in only if name not in matched]
    if unknown:
        available = ", ".join(p.stem for p in notebooks) or "none"
        raise ValueError(f"no notebook {', '.join(unknown)} in {folder} (available: {available})")
    return chosen


def resolve_kernel(preferred: str = PREFERRED_KERNEL) -> str:
    """Name of the Jupyter kernel to run notebooks with: `preferred` if installed, else `python3`.

    The fallback (the interpreter running kdlab) comes with a warning saying how to register
    the `kdlab` kernel; RuntimeError when neither exists.
    """
    from jupyter_client.kernelspec import find_kernel_specs

    installed = find_kernel_specs()
    if preferred in installed:
        return preferred
    if FALLBACK_KERNEL in installed:
        warnings.warn(
            f"Jupyter kernel {preferred!r} is not installed; running notebooks with {FALLBACK_KERNEL!r}. "
            f"Register it with `make setup` (python -m ipykernel install --sys-prefix --name {preferred}).",
            stacklevel=2,
        )
        return FALLBACK_KERNEL
    raise RuntimeError(
        f"no Jupyter kernel {preferred!r} or {FALLBACK_KERNEL!r} found; install ipykernel and run `make setup`"
    )


def use_embedded_plotly() -> None:
    """Make plotly figures show in JupyterLab and in exported HTML, with plotly.js embedded once.

    Call it once per notebook, in a cell that runs before the first figure. The HTML form comes
    from `kdlab.report.offline_html.OfflineNotebookRenderer` (no MathJax from a CDN).
    """
    import plotly.io as pio

    from kdlab.report.offline_html import OfflineNotebookRenderer

    pio.renderers[OFFLINE_RENDERER] = OfflineNotebookRenderer()
    pio.renderers.default = PLOTLY_RENDERER


def notebook_title(notebook) -> str:
    """Text of the first `# heading` in a notebook's markdown cells ('' when there is none)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def local_socket_kernel_manager():
    """A kernel manager whose kernels talk over local (IPC) sockets: a headless run opens no TCP port,
    and the kernel has no reason to warn that TCP traffic goes unencrypted."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalSocketKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

    return LocalSocketKernelManager


def execute_notebook(
    source: str | Path, target: str | Path, parameters: Mapping, kernel_name: str, progress: bool = True
) -> None:
    """Execute `source` headless into `target` (created or replaced) with injected `parameters`.

    The kernel runs in the notebook's own folder, as in JupyterLab. Raises `NotebookFailed`
    naming the notebook, the cell and the error; `target` then holds the failed run.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    local = {"kernel_manager_class": local_socket_kernel_manager()} if os.name == "posix" else {}
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=dict(parameters),
            kernel_name=kernel_name,
            cwd=str(source.parent),
            progress_bar=progress,
            **local,
        )
    except PapermillExecutionError as error:
        raise NotebookFailed(
            f"{source.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
            f"(the executed notebook with the traceback is {target})"
        ) from None


def plotlyjs_bundle_count(page: str) -> int:
    """How many copies of the plotly.js library an HTML page embeds."""
    return len(_PLOTLYJS_BANNER.findall(page))


def export_html(executed: str | Path, target: str | Path) -> Path:
    """Write an executed notebook as a standalone, offline HTML report (lab template) to `target`.

    Widget state stored by the run is embedded, and widget panels are drawn from it statically;
    formulas are typeset by the MathJax copy in `target`'s folder (`kdlab.report.offline_html.install_mathjax`).
    `NotebookFailed` (nothing written) says how to fix the notebook when the page shows plotly
    figures without embedding plotly.js exactly once, or would load anything from another host.
    """
    import nbformat

    from kdlab.report.offline_html import external_resources, install_mathjax, offline_html_exporter
    from kdlab.report.widget_snapshot import snapshot_widget_views

    executed, target = Path(executed), Path(target)
    notebook = nbformat.read(executed, as_version=4)
    page, _ = offline_html_exporter().from_notebook_node(snapshot_widget_views(notebook))
    has_figures = "Plotly.newPlot(" in page or any(
        PLOTLY_MIMETYPE in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])
    )
    bundles = plotlyjs_bundle_count(page)
    if has_figures and bundles != 1:
        raise NotebookFailed(
            f"{executed.name} shows plotly figures but its HTML embeds plotly.js {bundles} times (expected 1); "
            "call kdlab.report.notebook_runner.use_embedded_plotly() once, before the first figure"
        )
    external = external_resources(page)
    if external:
        raise NotebookFailed(
            f"{executed.name}: its HTML report would load {len(external)} file(s) from other hosts, which fails "
            f"offline: {', '.join(sorted(set(external))[:3])}; show figures through "
            "kdlab.report.notebook_runner.use_embedded_plotly() and HTML without external <script src=...>"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    install_mathjax(target.parent)
    target.write_text(page, encoding="utf-8")
    return target


def run_notebooks(
    sources: Iterable[str | Path],
    out_dir: str | Path,
    parameters: Mapping,
    html_reports: bool = True,
    kernel_name: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[NotebookRun]:
    """Execute `sources` in order into `out_dir` (and `out_dir/html` unless `html_reports` is False).

    Stops at the first failing notebook (`NotebookFailed`), since later lessons build on earlier ones.
    """
    import nbformat

    out_dir = Path(out_dir)
    kernel_name = kernel_name or resolve_kernel()
    runs = []
    for source in map(Path, sources):
        executed = out_dir / source.name
        log(f"{source.stem}: running with kernel {kernel_name!r} ...")
        start = time.perf_counter()
        execute_notebook(source, executed, parameters, kernel_name, progress=progress)
        seconds = time.perf_counter() - start
        report = export_html(executed, out_dir / "html" / f"{source.stem}.html") if html_reports else None
        title = notebook_title(nbformat.read(source, as_version=4)) or source.stem
        runs.append(NotebookRun(source.stem, title, executed, report, seconds))
        log(f"{source.stem}: done in {seconds:.1f} s -> {report or executed}")
    return runs


def notebook_links_section(runs: Sequence[NotebookRun], out_dir: str | Path) -> IndexSection:
    """Index section listing every notebook: its HTML report and the executed `.ipynb`."""
    out_dir = Path(out_dir)
    items = []
    for run in runs:
        links = [f'<a href="{html.escape(_relative(run.html, out_dir))}">report</a>'] if run.html else []
        links.append(f'<a href="{html.escape(_relative(run.executed, out_dir))}">notebook</a>')
        items.append(
            f'<li>{html.escape(run.title)} — {" · ".join(links)} <span class="time">({run.seconds:.0f} s)</span></li>'
        )
    return IndexSection("Notebooks", '<ul class="notebooks">\n' + "\n".join(items) + "\n</ul>")


def notebook_figures(notebook) -> list[tuple[dict, dict]]:
    """`(cell, figure dict)` for every plotly figure an executed notebook shows, in order.

    Figures are plotly mimetype outputs and the panel figures inside widget outputs (as saved).
    """
    from kdlab.report.widget_snapshot import saved_widget_state, view_figures

    models = saved_widget_state(notebook)
    figures = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIMETYPE in data:
                figures.append((cell, data[PLOTLY_MIMETYPE]))
            elif WIDGET_VIEW_MIMETYPE in data:
                figures.extend(
                    (cell, figure) for figure in view_figures(models, data[WIDGET_VIEW_MIMETYPE]["model_id"])
                )
    return figures


def key_figures(notebook) -> list[tuple[dict, dict]]:
    """The figures of cells tagged `key-figure`; when no cell is tagged, the first figure (if any)."""
    figures = notebook_figures(notebook)
    tagged = [(cell, figure) for cell, figure in figures if KEY_FIGURE_TAG in cell.get("metadata", {}).get("tags", [])]
    return tagged or figures[:1]


def key_figures_section(runs: Sequence[NotebookRun], out_dir: str | Path) -> IndexSection:
    """Index section with the key figures (`key_figures`) of every notebook, each linked to its report."""
    import nbformat

    from kdlab.report.offline_html import figure_html

    out_dir = Path(out_dir)
    blocks = []
    for run in runs:
        for cell, figure in key_figures(nbformat.read(run.executed, as_version=4)):
            source = run.html or run.executed
            anchor = f"#cell-id={cell['id']}" if run.html and cell.get("id") else ""
            link = f'<a href="{html.escape(_relative(source, out_dir) + anchor)}">{html.escape(run.title)}</a>'
            blocks.append(f"<figure>\n{figure_html(figure)}\n<figcaption>from {link}</figcaption>\n</figure>")
    if not blocks:
        return IndexSection("Key figures", "<p>No notebook shows a figure.</p>")
    return IndexSection("Key figures", "\n".join(blocks), uses_plotly=True)


def render_index(sections: Sequence[IndexSection], title: str = "kdlab study report") -> str:
    """A self-contained HTML page (nothing loaded from other hosts) with a table of contents.

    plotly.js is embedded once when a section `uses_plotly`.
    """
    from kdlab.report.offline_html import plotlyjs_script

    scripts = plotlyjs_script() if any(s.uses_plotly for s in sections) else ""
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}">\n<h2>{html.escape(s.title)}</h2>\n{s.body_html}\n</section>' for s in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }}
nav ul, ul.notebooks {{ padding-left: 1.2rem; }}
.time {{ color: #666; font-size: 0.9em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: right; }}
figure {{ margin: 1rem 0 2rem; }}
figcaption {{ color: #444; font-size: 0.9em; }}
</style>
{scripts}
</head>
<body>
<h1>{html.escape(title)}</h1>
<nav><ul>{toc}</ul></nav>
{body}
</body>
</html>
"""


def write_index(out_dir: str | Path, sections: Sequence[IndexSection], title: str = "kdlab study report") -> Path:
    """Write `render_index(sections)` to `<out_dir>/index.html` and return its path."""
    path = Path(out_dir) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_index(sections, title), encoding="utf-8")
    return path


def _relative(path: Path, folder: Path) -> str:
    return Path(path).resolve().relative_to(folder.resolve()).as_posix()
