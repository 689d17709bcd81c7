"""The widget panels of notebooks 03 (hard-concrete gate, sparsity) and 04 (rank) as a page shows
them, and the check that they follow their controls in JupyterLab (test_notebooks_compression.py).

A panel is a widget VBox holding its controls, a status line and a plotly figure (drawn from an
ipywidgets ``Output``: kdlab/viz/figure_pane.py). Its figure, controls and status must agree after
the notebook ran, after its panel cells were re-run, after each of its controls (sliders, the
rank panel's matrix dropdown) moved (a round trip through the kernel) and after a page reload
with the kernel alive.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from jupyterlab_pages import (
    KERNEL_IDLE,
    NOTEBOOK_ERRORS,
    NOTEBOOK_SAVED,
    PAGE_MS,
    ROUND_TRIP_MS,
    Lab,
    check_every_heatmap_slider,
    reload_notebook,
    wait_for,
)

#: Time to run a lesson in JupyterLab once its runs are cached (the headless run trained them).
RUN_ALL_MS = 240_000
# In the page: every panel output (a widget VBox holding a plotly figure) as its controls, status
# line and figure show them; the figure read from plotly's own graph div. (textContent: JupyterLab
# does not lay out cells scrolled out of view, and innerText is empty there.)
PANELS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
  .filter(el => { const gd = el.querySelector('.widget-vbox .js-plotly-plot');  // drawn, not mid-redraw
                  return gd && gd.layout && gd._fullData && gd.querySelector('.main-svg'); })
  .map(el => {
    const gd = el.querySelector('.js-plotly-plot');
    const controls = {};  // label -> what the control shows, in page order
    el.querySelectorAll('.widget-slider, .widget-dropdown').forEach(c => {
      const label = c.querySelector('.widget-label').textContent.trim();
      const select = c.querySelector('select');
      const readout = c.querySelector('.widget-readout');
      controls[label] = (select ? select.options[select.selectedIndex].text : readout.textContent).trim();
    });
    const status = el.querySelector('.widget-html-content');
    return {controls: controls, status: status ? status.textContent : '', title: (gd.layout.title || {}).text || '',
            traces: gd._fullData.map(t => ({name: t.name || '', x: Array.from(t.x || []), y: Array.from(t.y || [])}))};
  })"""
RERUN_PANEL_CELLS = """async () => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const cells = notebook.widgets.map((cell, i) => [cell, i])
    .filter(([cell]) => cell.node.querySelector('.widget-vbox .js-plotly-plot'));
  for (const [cell, i] of cells) {
    notebook.activeCellIndex = i;
    await window.jupyterapp.commands.execute('notebook:run-cell');
  }
  return cells.length;
}"""
LIVE_PANEL_FIGURES = """async () => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const code = "import ipywidgets as _w\\nfrom ipywidgets.widgets.widget import _instances as _live\\n"
             + "print(sum(isinstance(w, _w.Output) for w in _live.values()))";
  let text = '';
  const future = kernel.requestExecute({code: code, silent: false, store_history: false});
  future.onIOPub = msg => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
  await future.done;
  return text.trim();
}"""
#: Per panel (its main slider's label): its controls' moves in order, (label, value typed into a
#: slider's readout or index of a dropdown's option); the last ones are the state screenshotted.
MOVES = {
    "log α": [("β (temperature)", "1.2"), ("log α", "2.5")],
    "sparsity": [("sparsity", "0.4")],  # reachable at tiny (its front-end is ~half)
    "rank": [("matrix", 1), ("matrix", 0), ("rank", "3")],  # another matrix and back (its rank resets)
}
SCREENSHOT_NAMES = {"log α": "hard_concrete_panel", "sparsity": "sparsity_panel", "rank": "rank_panel"}
#: The panels each lesson shows, in order, by their main slider.
LESSON_PANELS = {"03_l0_pruning": ["log α", "sparsity"], "04_low_rank_factorization": ["rank"]}
HEATMAP_LESSONS = {"03_l0_pruning"}  # gate heatmaps with a step slider, drawn live in JupyterLab


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text.replace(",", ""))
    assert found, f"{pattern!r} not found in {text!r}"
    return float(found.group(1))


def disagreements(panel: dict) -> list[str]:
    """What the panel's figure, controls and status say differently (empty when they agree)."""
    controls, status, title = panel["controls"], panel["status"], panel["title"]
    problems = []
    if "log α" in controls:  # title: log α, β and the closed-form atoms; status: the same atoms
        for label, name in (("log α", "log α"), ("β (temperature)", "β")):
            if _number(rf"{name} = (-?[\d.]+)", title) != float(controls[label]):
                problems.append(f"figure title {title!r} vs slider {label} {controls[label]}")
        if _number(r"P\(z = 0\) = ([\d.]+)", title) != _number(r"P\(z = 0\) = [\d.]+ \(closed form ([\d.]+)\)", status):
            problems.append(f"P(z = 0): figure {title!r} vs status {status!r}")
    elif "sparsity" in controls:  # status: asked = slider; the figure's title: the status's params / dense
        if _number(r"asked ([\d.]+)", status) != float(controls["sparsity"]):
            problems.append(f"status {status!r} vs slider sparsity {controls['sparsity']}")
        params, dense = _number(r"params (\d+) of", status), _number(r"params \d+ of (\d+)", status)
        if f"{params / dense:.1%}" not in title:
            problems.append(f"figure title {title!r} vs status params {params:.0f} of {dense:.0f}")
    elif "rank" in controls:  # status and the figure: the dropdown's matrix, the slider's rank as marker
        rank, matrix = int(controls["rank"]), controls["matrix"]
        if not status.startswith(f"{matrix} (") or f"rank {rank}:" not in status:
            problems.append(f"status {status[:80]!r} vs matrix {matrix}, rank {rank}")
        if title != matrix:
            problems.append(f"figure title {title!r} vs matrix {matrix}")
        chosen = [t for t in panel["traces"] if t["name"].startswith("rank ")]
        if len(chosen) != 1 or chosen[0]["x"] != [rank, rank]:
            problems.append(f"chosen-rank marker {chosen} vs slider rank {rank}")
    return problems


def _same(shown: str, wanted: str) -> bool:
    """A control shows `wanted` (numbers compared as numbers: a readout formats what was typed)."""
    try:
        return float(shown) == float(wanted)
    except ValueError:
        return shown == wanted


def wait_until_agreeing(
    page, expected: list[str], problems: list[str], failure: str, showing: list[dict] | None = None
) -> list:
    """Poll the panels until each agrees with itself and its controls show ``showing[i]``'s values
    ({label: value}); fail with what differs."""
    deadline = time.monotonic() + ROUND_TRIP_MS / 1000
    while True:
        panels = page.evaluate(PANELS)
        shown = [next((label for label in p["controls"] if label in MOVES), "?") for p in panels]
        differ = [] if shown == expected else [f"panels shown: {shown}, expected {expected}"]
        for panel, wanted in zip(panels if not differ else [], showing or [{}] * len(panels)):
            differ += disagreements(panel)
            differ += [
                f"{label} shows {panel['controls'][label]}, not {value}"
                for label, value in wanted.items()
                if not _same(panel["controls"][label], value)
            ]
        if not differ or problems or time.monotonic() > deadline:
            assert not problems, f"{failure}; the browser reported:\n" + "\n".join(problems)
            assert not differ, f"{failure}:\n" + "\n".join(differ)
            return panels
        time.sleep(0.25)


def _move(page, panel, label: str, value) -> str:
    """Set the control `label` of `panel` (a locator) as a student does; returns what it must show."""
    if isinstance(value, int):  # a dropdown: pick its option `value`
        select = panel.locator(".widget-dropdown", has_text=label).first.locator("select")
        option = select.locator("option").nth(value).inner_text()
        select.select_option(index=value)
        return option
    panel.locator(".widget-slider", has_text=label).first.locator(".widget-readout").click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")
    return value


def run_and_check_panels(page, problems: list[str], lab: Lab, name: str, screenshots: Path) -> None:
    """Run notebook `name` (open in `page`) in JupyterLab and check its panels: they agree with
    themselves after the run and after their cells are re-run (the re-runs leave no earlier widget
    alive), they follow each move of each control, and a reload with the kernel alive shows the moved
    state. Its heatmaps' step sliders are checked after the run; screenshots of the moved panels go
    to `screenshots`."""
    expected = LESSON_PANELS[name]
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    drawn = f"() => ({PANELS})().length >= {len(expected)} || ({NOTEBOOK_ERRORS})().length > 0"
    wait_for(page, drawn, RUN_ALL_MS, f"{name}: the panels' figures were not drawn", problems, lab)
    wait_for(page, KERNEL_IDLE, RUN_ALL_MS, f"{name}: the notebook did not finish", problems, lab)
    assert not page.evaluate(NOTEBOOK_ERRORS), f"{name} failed in JupyterLab: {page.evaluate(NOTEBOOK_ERRORS)}"
    if name in HEATMAP_LESSONS:  # drawn by JupyterLab's plotly renderer from the live outputs
        heatmap = "() => !!document.querySelector('.js-plotly-plot .slider-group')"
        wait_for(page, heatmap, PAGE_MS, f"{name}: no gate heatmap with a step slider", problems, lab)
        check_every_heatmap_slider(page, problems, at_least=1)
    # Re-running the panel cells must not leave their earlier widgets alive: a reload loads every
    # live widget, and their number would grow with every re-run.
    for _ in range(2):
        page.evaluate(RERUN_PANEL_CELLS)
        wait_for(page, KERNEL_IDLE, RUN_ALL_MS, f"{name}: re-running the panel cells did not finish", problems, lab)
    before = wait_until_agreeing(page, expected, problems, f"{name}: a panel disagrees with itself after the run")
    live = page.evaluate(LIVE_PANEL_FIGURES)
    assert live == str(len(expected)), (
        f"{name}: {live} panel figures (Output widgets) alive in the kernel after re-runs, not {len(expected)}"
    )

    outputs = page.locator(".jp-OutputArea-output", has=page.locator(".widget-vbox .js-plotly-plot"))
    for index, main in enumerate(expected):
        for label, value in MOVES[main]:
            showing = [{} for _ in expected]
            showing[index] = {label: _move(page, outputs.nth(index), label, value)}
            wait_until_agreeing(page, expected, problems, f"{name}: panel {main} after {label} -> {value}", showing)
    after = wait_until_agreeing(page, expected, problems, f"{name}: a panel disagrees after its moves")
    for old, new, main in zip(before, after, expected):
        assert (old["title"], old["traces"]) != (new["title"], new["traces"]), (
            f"moving {main} left its figure as it was"
        )

    page.mouse.move(0, 0)  # no hover toolbar over the figures
    for index, main in enumerate(expected):
        cell = page.locator(".jp-Cell", has=page.locator(".widget-vbox .js-plotly-plot")).nth(index)
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(screenshots / f"{name[:2]}_{SCREENSHOT_NAMES[main]}.png"))

    # A reload with the kernel alive draws the panels from the kernel's widget state: every control
    # as it was moved, figures and status agreeing with them.
    assert page.evaluate(NOTEBOOK_SAVED)
    assert not problems, "the browser reported problems before the reload:\n" + "\n".join(problems)
    reload_notebook(page, problems, lab, name)
    showing = [panel["controls"] for panel in after]
    wait_until_agreeing(page, expected, problems, f"{name}: a panel disagrees after a page reload", showing)
    assert not problems, "the browser reported problems:\n" + "\n".join(problems)
