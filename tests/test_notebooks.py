"""Notebooks: committed clean, run headless at tiny settings, published as HTML with an index;
the reports and the index opened in a real (headless) Chromium (tests/jupyterlab_pages.py) load
offline without console errors and draw their plotly figures, those of notebooks 00 and 01 run
here, or with ``KDLAB_CHECK_OUTPUTS=<folder>`` those of a finished `make study` (`make check-report`:
``-m browser``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import find_kernel_specs
from jupyterlab_pages import PAGE_MS, drawn_figures, open_page, screenshot_folder, wait_for_drawn
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from stand_ins import assert_nothing_on_stderr

from kdlab.paths import PROJECT_ROOT
from kdlab.report import notebook_runner as nr
from kdlab.report.offline_html import external_resources
from kdlab.report.widget_snapshot import WIDGET_STATE_MIMETYPE

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def _kernel() -> str:
    return nr.PREFERRED_KERNEL if nr.PREFERRED_KERNEL in find_kernel_specs() else nr.FALLBACK_KERNEL


def _write(path, *cells):
    notebook = new_notebook(cells=list(cells), metadata={"language_info": {"name": "python"}})
    notebook.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(notebook, path)
    return path


# --- committed notebooks ---------------------------------------------------------------


def test_notebooks_folder_holds_sequenced_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebooks"
    assert [p.name for p in NOTEBOOKS] == [p.name for p in nr.discover_notebooks(PROJECT_ROOT / "notebooks")], (
        "every notebook must be named NN_name.ipynb"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_a_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; clear them before committing"
    assert "widgets" not in notebook.metadata, f"{path.name}: widget state is stored; clear it before committing"
    assert notebook.metadata.kernelspec.name == nr.PREFERRED_KERNEL
    assert "profile" in papermill.inspect_notebook(str(path)), f"{path.name}: parameters cell must define `profile`"


# --- notebooks 00 and 01 executed by the command, as `make study` does ------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    command = [sys.executable, "-m", "kdlab", "notebooks", "--profile", "tiny", "--out", str(out), "--only", "00", "01"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert result.returncode == 0, (
        f"`{' '.join(command[1:])}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    (out / "command-stderr.txt").write_text(result.stderr)
    return out


def test_notebook_01_runs_headless_and_scores_the_teachers_on_the_held_out_test_sets(study):
    notebook = nbformat.read(study / "01_ssl_teacher.ipynb", as_version=4)
    errors = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    assert_nothing_on_stderr(notebook, "01_ssl_teacher")
    held_out = next(
        cell for cell in notebook.cells if cell.cell_type == "code" and "held_out = pd.DataFrame" in cell.source
    )
    table = held_out.outputs[-1]["data"]["text/plain"]
    assert all(split in table for split in ("test", "test_unseen_engine", "test_unseen_text")), table


def test_the_command_prints_no_warning_of_the_kernel_or_the_notebook(study):
    # stderr holds the progress bars; a warning line (e.g. the kernel's "running over TCP without
    # encryption", gone with local-socket kernels) must not be among them
    lines = (study / "command-stderr.txt").read_text().replace("\r", "\n").splitlines()
    assert not [line for line in lines if "warning" in line.lower()], lines


def test_notebook_00_runs_headless_at_tiny_settings(study):
    notebook = nbformat.read(study / "00_corpus.ipynb", as_version=4)
    errors = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    injected = [cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "tiny"' in injected[0].source
    assert all(cell.execution_count is not None for cell in notebook.cells if cell.cell_type == "code")
    assert not notebook.metadata.papermill.exception
    assert_nothing_on_stderr(notebook, "00_corpus")


def test_html_report_embeds_plotly_once_and_the_widget_state(study):
    page = (study / "html" / "00_corpus.html").read_text(encoding="utf-8")
    executed = nbformat.read(study / "00_corpus.ipynb", as_version=4)
    assert nr.plotlyjs_bundle_count(page) == 1
    assert page.count("Plotly.newPlot(") == len(nr.notebook_figures(executed)) >= 4  # histogram, waveforms, the panel's
    assert WIDGET_STATE_MIMETYPE in page
    assert '"model_name": "OutputModel"' in page or '"model_name":"OutputModel"' in page  # the panel's figure
    assert "kdlab-widget-box" in page and nr.WIDGET_VIEW_MIMETYPE not in page  # the panel drawn statically


def test_html_report_loads_nothing_from_other_hosts(study):
    page = (study / "html" / "00_corpus.html").read_text(encoding="utf-8")
    assert external_resources(page) == []
    assert "cdnjs.cloudflare.com" not in page and "unpkg.com" not in page  # no MathJax, require.js, widget manager


def test_index_links_every_report_and_loads_nothing_external(study):
    index = (study / "index.html").read_text(encoding="utf-8")
    markup = re.sub(r"<script\b.*?</script>", "", index, flags=re.DOTALL)  # plotly.js holds links of its own
    links = re.findall(r'href="([^"#]+)', markup)
    assert "html/00_corpus.html" in links and "00_corpus.ipynb" in links
    assert all((study / link).is_file() for link in links)
    assert external_resources(index) == []
    assert "The corpus" in index  # the notebook's title


def test_index_shows_the_key_figure_of_notebook_00_with_plotly_embedded_once(study):
    index = (study / "index.html").read_text(encoding="utf-8")
    executed = nbformat.read(study / "00_corpus.ipynb", as_version=4)
    (cell, _), *_ = nr.notebook_figures(executed)  # nothing tagged `key-figure`: the first figure
    assert nr.plotlyjs_bundle_count(index) == 1
    assert index.count("Plotly.newPlot(") == 2  # one key figure for each of the two notebooks run
    assert f'href="html/00_corpus.html#cell-id={cell.id}"' in index


# --- the reports and the index in a browser ---------------------------------------------


@pytest.fixture(scope="module")
def reports(request):
    """The output folder whose reports the browser opens: ``KDLAB_CHECK_OUTPUTS`` (a finished
    `make study`: `make check-report`), else notebooks 00 and 01 run here (``study``)."""
    finished = os.environ.get("KDLAB_CHECK_OUTPUTS")
    if not finished:
        return request.getfixturevalue("study")
    folder = Path(finished).resolve()
    if not (folder / "index.html").is_file():
        pytest.fail(f"KDLAB_CHECK_OUTPUTS={finished}: no index.html there; run `make study` first")
    return folder


@pytest.mark.browser
def test_index_in_a_browser_loads_offline_without_errors_and_shows_each_notebooks_figures(
    browser, reports, tmp_path_factory
):
    with_figures = [
        p.stem for p in sorted(reports.glob("*.ipynb")) if nr.notebook_figures(nbformat.read(p, as_version=4))
    ]
    assert with_figures, "notebook 00 shows figures; the index must have some to check"
    page, problems = open_page(browser, reports / "index.html")
    try:
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_MS)
        for name in with_figures:
            drawn = drawn_figures(page, f"figure:has(a[href^='html/{name}.html'])")
            assert drawn and all(drawn), f"index.html: the key figure(s) of {name} are missing or not drawn: {drawn}"
        if (reports / "study" / "results.json").is_file():  # a study ran: its table is on the page
            assert page.locator("h2", has_text="Study results").count() == 1
            assert page.locator("table").count() >= 2, "the study's results and claims tables"
        page.screenshot(path=str(screenshot_folder(tmp_path_factory) / "index.png"))
        assert not problems, "index.html: the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()


@pytest.mark.browser
def test_reports_in_a_browser_load_offline_without_errors_and_draw_every_figure(browser, reports):
    for executed in sorted(reports.glob("*.ipynb")):
        expected = len(nr.notebook_figures(nbformat.read(executed, as_version=4)))
        page, problems = open_page(browser, reports / "html" / f"{executed.stem}.html")
        try:
            if expected:  # large figures draw one after another: wait for all of them (or time out)
                wait_for_drawn(page, expected)
            drawn = page.locator(".js-plotly-plot").evaluate_all(
                "els => els.map(el => !!el.querySelector('.main-svg'))"
            )
            assert len(drawn) == expected and all(drawn), (
                f"{executed.stem}: {expected} figures expected, drawn: {drawn}"
            )
            assert not problems, f"{executed.stem}.html: the browser reported problems:\n" + "\n".join(problems)
        finally:
            page.close()


# --- runner behaviour --------------------------------------------------------------------


def test_discover_notebooks_orders_and_filters(tmp_path):
    for name in ("01_b.ipynb", "00_a.ipynb", "notes.ipynb", "2_c.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in nr.discover_notebooks(tmp_path)] == ["00_a.ipynb", "01_b.ipynb"]
    assert [p.name for p in nr.discover_notebooks(tmp_path, ["01"])] == ["01_b.ipynb"]
    assert [p.name for p in nr.discover_notebooks(tmp_path, ["00_a"])] == ["00_a.ipynb"]
    with pytest.raises(ValueError, match=r"no notebook 07 in .* \(available: 00_a, 01_b\)"):
        nr.discover_notebooks(tmp_path, ["01", "07"])
    with pytest.raises(FileNotFoundError, match="notebook folder not found"):
        nr.discover_notebooks(tmp_path / "missing")


def test_resolve_kernel_falls_back_to_python3_with_a_warning(monkeypatch):
    import jupyter_client.kernelspec as kernelspec

    monkeypatch.setattr(kernelspec, "find_kernel_specs", lambda: {"python3": "/k/python3", "kdlab": "/k/kdlab"})
    assert nr.resolve_kernel() == "kdlab"
    monkeypatch.setattr(kernelspec, "find_kernel_specs", lambda: {"python3": "/k/python3"})
    with pytest.warns(UserWarning, match="'kdlab' is not installed.*make setup"):
        assert nr.resolve_kernel() == "python3"
    monkeypatch.setattr(kernelspec, "find_kernel_specs", lambda: {})
    with pytest.raises(RuntimeError, match="no Jupyter kernel"):
        nr.resolve_kernel()


def test_export_refuses_plotly_figures_without_an_embedded_plotlyjs(tmp_path):
    figure = new_code_cell("fig", execution_count=1)
    figure.outputs = [
        new_output("display_data", data={nr.PLOTLY_MIMETYPE: {"data": [], "layout": {}}, "text/plain": "fig"})
    ]
    path = _write(tmp_path / "00_fig.ipynb", new_code_cell("profile = 'x'"), figure)
    with pytest.raises(nr.NotebookFailed, match=r"embeds plotly.js 0 times \(expected 1\).*use_embedded_plotly"):
        nr.export_html(path, tmp_path / "00_fig.html")
    assert not (tmp_path / "00_fig.html").exists()


def test_run_notebooks_injects_parameters_and_stops_at_the_first_failure(tmp_path):
    source = tmp_path / "nb"
    source.mkdir()
    _write(
        source / "00_ok.ipynb",
        new_code_cell("profile = 'default'"),
        new_markdown_cell("# Fine"),
        new_code_cell("print(profile * 2)"),
    )
    _write(
        source / "01_bad.ipynb",
        new_code_cell("profile = 'default'"),
        new_code_cell("raise ValueError('boom ' + profile)"),
    )
    _write(source / "02_never.ipynb", new_code_cell("profile = 'default'"))
    out = tmp_path / "out"
    logged = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(nr.NotebookFailed, match=r"01_bad.ipynb failed in cell \d+: ValueError: boom tiny"):
            nr.run_notebooks(
                nr.discover_notebooks(source),
                out,
                {"profile": "tiny"},
                html_reports=False,
                kernel_name=_kernel(),
                progress=False,
                log=logged.append,
            )
    done = nbformat.read(out / "00_ok.ipynb", as_version=4)
    assert done.cells[-1].outputs[0].text == "tinytiny\n"
    assert (out / "01_bad.ipynb").is_file() and not (out / "02_never.ipynb").exists()
    assert any(line.startswith("00_ok: done in") for line in logged)


def _figure_output(title):
    return new_output(
        "display_data",
        data={nr.PLOTLY_MIMETYPE: {"data": [{"type": "bar", "y": [1, 2]}], "layout": {"title": {"text": title}}}},
    )


def test_key_figures_are_the_tagged_ones_else_the_first(tmp_path):
    cells = [new_code_cell("profile = 'x'"), new_code_cell("a"), new_code_cell("b"), new_code_cell("c")]
    cells[1].outputs, cells[2].outputs, cells[3].outputs = (
        [_figure_output("A")],
        [_figure_output("B")],
        [_figure_output("C")],
    )
    notebook = new_notebook(cells=cells)
    titles = lambda figures: [figure["layout"]["title"]["text"] for _, figure in figures]  # noqa: E731
    assert titles(nr.notebook_figures(notebook)) == ["A", "B", "C"]
    assert titles(nr.key_figures(notebook)) == ["A"]
    cells[2].metadata["tags"] = [nr.KEY_FIGURE_TAG]
    cells[3].metadata["tags"] = ["other", nr.KEY_FIGURE_TAG]
    assert titles(nr.key_figures(notebook)) == ["B", "C"]
    assert nr.key_figures(new_notebook(cells=[new_code_cell("1")])) == []


def test_key_figures_section_embeds_plotlyjs_once_and_only_when_needed(tmp_path):
    figure = new_code_cell("fig", execution_count=1)
    figure.outputs = [_figure_output("A")]
    path = _write(tmp_path / "00_a.ipynb", new_code_cell("profile = 'x'"), figure)
    runs = [nr.NotebookRun("00_a", "A", path, None, 1.0), nr.NotebookRun("01_b", "B", path, None, 1.0)]
    section = nr.key_figures_section(runs, tmp_path)
    assert section.uses_plotly and section.body_html.count("Plotly.newPlot(") == 2
    assert 'href="00_a.ipynb"' in section.body_html  # no report: the link goes to the executed notebook
    page = nr.render_index([section, nr.IndexSection("Results", "<p>r</p>")])
    assert nr.plotlyjs_bundle_count(page) == 1 and external_resources(page) == []
    plain = nr.render_index([nr.key_figures_section([], tmp_path)])
    assert nr.plotlyjs_bundle_count(plain) == 0 and "No notebook shows a figure" in plain


def test_export_refuses_html_that_loads_from_other_hosts(tmp_path):
    output = new_code_cell("html", execution_count=1)
    output.outputs = [
        new_output("display_data", data={"text/html": '<script src="https://cdn.example.org/lib.js"></script>'})
    ]
    path = _write(tmp_path / "00_cdn.ipynb", new_code_cell("profile = 'x'"), output)
    with pytest.raises(
        nr.NotebookFailed, match=r"would load 1 file\(s\) from other hosts.*https://cdn.example.org/lib.js"
    ):
        nr.export_html(path, tmp_path / "00_cdn.html")
    assert not (tmp_path / "00_cdn.html").exists()


def test_index_is_assembled_from_sections_in_order(tmp_path):
    runs = [nr.NotebookRun("00_a", "A <lesson>", tmp_path / "00_a.ipynb", None, 1.0)]
    sections = [
        nr.IndexSection("Results table", "<table><tr><td>1</td></tr></table>"),
        nr.notebook_links_section(runs, tmp_path),
    ]
    page = nr.write_index(tmp_path, sections).read_text()
    assert page.index('id="results-table"') < page.index('id="notebooks"')
    assert '<a href="#results-table">Results table</a>' in page
    assert "A &lt;lesson&gt;" in page and 'href="00_a.ipynb"' in page and "report</a>" not in page
