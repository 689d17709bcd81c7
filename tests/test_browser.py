"""Notebook 00 and the HTML reports' pages as people see them, in a real (headless) Chromium.

The widget panel of notebook 00 must render in JupyterLab (ipywidgets sliders and the panel's
plotly figure), and moving its SNR slider in the page must change the figure (a round trip
through the kernel). A lesson report's formulas must be typeset by its local MathJax copy with
every request to another host refused; a widget figure placed before a report's plotly.js must
still draw; a gate heatmap's step slider on a static page must show each recorded step with its
label clear of the play buttons.

Checked in a browser beside the runs that make what they open: the reports and the index in
test_notebooks.py, the lessons in JupyterLab in test_notebooks_compression.py (02–04) and
test_notebooks_joint_study.py (05). Chromium, JupyterLab and screenshots: tests/jupyterlab_pages.py
(the system's Chromium, skipped without it except under CI; screenshots in a temporary folder
unless ``KDLAB_SCREENSHOTS`` is set).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyterlab_pages import (
    HEATMAP_STATE,
    HIDDEN_WIDGET_RENDER_ERRORS,
    NOTEBOOK_ERRORS,
    PAGE_MS,
    ROUND_TRIP_MS,
    click_heatmap_steps,
    drawn_figures,
    heatmap_label_clears_the_buttons,
    jupyterlab,
    lesson_at_tiny,
    open_notebook,
    open_page,
    screenshot_folder,
    wait_for,
    wait_for_drawn,
    watch,
)

from kdlab.paths import PROJECT_ROOT
from kdlab.report import notebook_runner as nr

pytestmark = pytest.mark.browser

NOTEBOOK = PROJECT_ROOT / "notebooks" / "00_corpus.ipynb"
RUN_ALL_MS = 60_000

# In the page: the panel's figure is drawn or a cell failed; a summary of the waveform trace the figure shows.
PANEL_DRAWN_OR_FAILED = (
    "() => !!document.querySelector('.widget-vbox .js-plotly-plot .main-svg') || (" + NOTEBOOK_ERRORS + ")().length > 0"
)
TRACE_SUMMARY = """gd => {
  const y = gd._fullData[0].y;  // decoded: the panel's JSON holds arrays as base64
  let total = 0;
  for (let i = 0; i < y.length; i++) total += Math.abs(y[i]);
  return {length: y.length, total: total};
}"""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return screenshot_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving notebook 00 at profile tiny (its corpus built first, not inside the browser's time limits)."""
    from kdlab.data.corpus import ensure_corpus

    ensure_corpus("tiny", progress=False)
    with jupyterlab(tmp_path_factory.mktemp("jupyterlab"), {NOTEBOOK.stem: lesson_at_tiny(NOTEBOOK.stem)}) as served:
        yield served


def test_panel_renders_in_jupyterlab_and_the_snr_slider_updates_the_figure(lab, browser, screenshots):
    page, problems = open_notebook(browser, lab, NOTEBOOK.stem)
    try:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait_for(page, PANEL_DRAWN_OR_FAILED, RUN_ALL_MS, "the synthesis panel's figure was not drawn", problems, lab)
        errors = page.evaluate(NOTEBOOK_ERRORS)
        assert not errors, f"notebook 00 failed in JupyterLab: {errors}"

        panel = page.locator(".jp-OutputArea-output", has=page.locator(".widget-vbox .js-plotly-plot"))
        assert panel.count() == 1, f"expected one output holding the panel, found {panel.count()}"
        assert panel.locator(".widget-slider").count() >= 3, "the panel's sliders (rate, pitch, SNR) did not render"
        snr = panel.locator(".widget-slider", has_text="SNR")
        assert snr.count() == 1, "the SNR slider did not render"
        figure = panel.locator(".js-plotly-plot")
        assert figure.locator(".main-svg").count() > 0, "plotly did not draw the panel's figure"
        before = figure.evaluate(TRACE_SUMMARY)
        assert before["length"] > 0 and before["total"] > 0, f"the waveform trace is empty: {before}"

        readout = snr.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0")
        page.keyboard.press("Enter")
        changed = (
            f"([before]) => ({TRACE_SUMMARY})(document.querySelector('.widget-vbox .js-plotly-plot')).total !== before"
        )
        wait_for(
            page,
            changed,
            ROUND_TRIP_MS,
            "moving the SNR slider to 0 dB in the page did not change the figure",
            problems,
            lab,
            [before["total"]],
        )
        after = figure.evaluate(TRACE_SUMMARY)
        assert readout.inner_text().strip() in ("0", "0.0", "0.00"), f"the slider shows {readout.inner_text()!r}"
        assert after["length"] == before["length"], "the time axis must stay; only the samples change with the SNR"
        assert after["total"] > before["total"], (
            f"more noise (0 dB SNR) must raise the mean amplitude: {before} -> {after}"
        )

        cell = page.locator(".jp-Cell", has=page.locator(".widget-vbox .js-plotly-plot"))
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(screenshots / "00_corpus_widgets.png"))
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()


def test_a_widget_figure_placed_before_the_pages_plotlyjs_still_draws(browser, tmp_path):
    """A report embeds plotly.js with its first plotly output; a widget panel shown earlier (notebook
    03's gate panel) must wait for it: drawn on load, no "Plotly is not defined"."""
    from kdlab.report.offline_html import figure_html, plotlyjs_script

    figure = {"data": [{"type": "bar", "y": [1, 3, 2]}], "layout": {"title": {"text": "panel"}}}
    for on_load in (True, False):
        path = tmp_path / f"on_load_{on_load}.html"
        path.write_text(f"<html><body>{figure_html(figure, on_load=on_load)}\n{plotlyjs_script()}</body></html>")
        page, problems = open_page(browser, path)
        try:
            if on_load:
                wait_for_drawn(page, 1)
                assert drawn_figures(page, "body") == [True] and not problems, problems
            else:  # the failure this guards against
                assert any("Plotly is not defined" in p for p in problems), problems
        finally:
            page.close()


def test_a_widget_render_error_counts_unless_no_output_in_the_page_shows_it(browser, tmp_path):
    """The work-around for JupyterLab's discarded widget renderers (HIDDEN_WIDGET_RENDER_ERRORS):
    "widget model not found" is a warning while no output shows an error, an error once one does;
    other console errors stay errors."""
    path = tmp_path / "outputs.html"
    path.write_text('<html><body><div class="jp-OutputArea-output">a panel</div></body></html>')
    page = browser.new_page()
    page.add_init_script(HIDDEN_WIDGET_RENDER_ERRORS)
    problems = watch(page)
    try:
        page.goto(path.as_uri(), wait_until="load", timeout=PAGE_MS)
        logged = []
        for shown, text in [
            ("a panel", "widget model not found"),
            ("a panel", "something else failed"),
            ("Error displaying widget: model not found", "widget model not found"),
        ]:
            with page.expect_console_message() as message:
                page.evaluate(
                    "([shown, text]) => { document.querySelector('.jp-OutputArea-output').textContent = shown;"
                    " console.error(new Error(text)); }",
                    [shown, text],
                )
            logged.append(message.value.type)
        assert logged == ["warning", "error", "error"], logged
        assert len(problems) == 2 and "something else" in problems[0] and "model not found" in problems[1], problems
    finally:
        page.close()


# A markdown formula as the report's source has it: $$...$$ or $...$ (not an escaped \\$).
FORMULA = re.compile(r"\$\$.+?\$\$|(?<!\\)\$[^$\n]+?(?<!\\)\$", re.DOTALL)
MATHJAX_DONE = """() => !!(window.MathJax && MathJax.Hub && MathJax.Hub.queue && MathJax.Hub.queue.pending === 0
  && MathJax.Hub.queue.running === 0 && document.querySelector('.MathJax, .MathJax_Display'))"""


def test_a_lesson_reports_formulas_render_with_no_network(browser, tmp_path):
    """The report of notebook 03 (formulas of the hard-concrete gate and the Lagrangian) opened with
    every non-file request refused: each formula is typeset, no `$` delimiter is left visible."""
    source = PROJECT_ROOT / "notebooks" / "03_l0_pruning.ipynb"
    markdown = [cell.source for cell in nbformat.read(source, as_version=4).cells if cell.cell_type == "markdown"]
    formulas = sum(len(FORMULA.findall(text)) for text in markdown)
    assert formulas > 5, "notebook 03 explains its method with formulas"
    report = nr.export_html(source, tmp_path / "html" / "03_l0_pruning.html")
    page = browser.new_page()
    refused: list[str] = []
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file:")
            else (refused.append(route.request.url), route.abort())
        ),
    )
    problems = watch(page)
    try:
        page.goto(report.as_uri(), wait_until="load", timeout=PAGE_MS)
        page.wait_for_function(MATHJAX_DONE, timeout=PAGE_MS)
        typeset = page.locator("script[type^='math/tex']").count()
        visible = page.locator(".jp-MarkdownCell").evaluate_all("cells => cells.map(c => c.innerText).join(' ')")
        assert typeset == formulas, f"{typeset} of the {formulas} formulas were typeset"
        assert "$" not in visible, f"raw TeX delimiters left: ...{visible[visible.find('$') - 80 :][:160]}..."
        assert not refused and not problems, f"requests to other hosts: {refused}; problems: {problems}"
    finally:
        page.close()


# ---- the gate heatmaps' step slider on a static page ------------------------------------------------


def test_gate_heatmap_slider_shows_each_recorded_step_and_its_label_clears_the_buttons(browser, tmp_path):
    from kdlab.report.offline_html import figure_html, plotlyjs_script
    from kdlab.viz.gate_figures import gate_heatmap_figure

    generator = np.random.default_rng(0)
    history = [
        {"step": step, "gates": {f"blocks.{layer}.attn": generator.random(4).round(3).tolist() for layer in range(3)}}
        for step in (0, 10, 20, 30)
    ]
    figure = gate_heatmap_figure(history, "attn")
    path = tmp_path / "heatmap.html"
    path.write_text(f"<html><body>{plotlyjs_script()}{figure_html(figure.to_plotly_json())}</body></html>")
    page, problems = open_page(browser, path)
    try:
        wait_for_drawn(page, 1)  # a report's figure plays its frames once on load; it ends on the last record
        page.wait_for_function(f"() => ({HEATMAP_STATE})().label === 'step 30'", timeout=ROUND_TRIP_MS)
        state = page.evaluate(HEATMAP_STATE)
        assert np.allclose(state["z"], figure.frames[-1].data[0].z)
        assert [f["name"] for f in state["frames"]] == [f.name for f in figure.frames]
        heatmap_label_clears_the_buttons(state)
        click_heatmap_steps(page, (1, 0), problems)
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()
