"""Notebooks as people see them: JupyterLab and the HTML reports in a real (headless) Chromium.

The widget panel of notebook 00 must render in JupyterLab (ipywidgets sliders and the panel's
plotly figure), and moving its SNR slider in the page must change the figure (a round trip
through the kernel). The panels of notebooks 03 (hard-concrete gate, sparsity) and 04 (rank) must
follow their sliders, with figure, controls and status agreeing after every move and after a
page reload with the kernel alive (after the panel cells were re-run); the gate heatmaps' step
slider (03 in JupyterLab, and on a static page) must show each recorded step with its label clear
of the play buttons. Notebooks 02 and 05 (no widget panel; 05's heatmaps have the same slider) run
whole in JupyterLab only under `make browser-slow` (``KDLAB_SLOW_BROWSER=1``): minutes of training.
`outputs/index.html` and the notebook reports must load offline without console errors and draw
their plotly figures, and a lesson report's formulas must be typeset by its local MathJax copy with
every request to another host refused.

Screenshots go to a temporary folder, or to ``KDLAB_SCREENSHOTS`` when set: `make screenshots`
sets it to `docs/img/` (the README's images), so running the tests never changes tracked files.

Chromium is the system's (Debian `chromium`: `make browser-deps`), driven by Playwright, which
never downloads a browser here. Without Chromium the tests skip, except under CI (`CI=true`),
where they fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs

from kdlab.paths import PROJECT_ROOT
from kdlab.report import notebook_runner as nr

pytestmark = pytest.mark.browser

NOTEBOOK = PROJECT_ROOT / "notebooks" / "00_corpus.ipynb"
LESSONS = ("03_l0_pruning", "04_low_rank_factorization")  # notebooks with panels, served beside 00
#: Notebooks without widget panels, run whole in JupyterLab only by `make browser-slow`: at tiny they
#: train for minutes (05: the tiny grid's rows), past `make test`'s 10-minute budget.
SLOW_LESSONS = ("02_knowledge_distillation", "05_joint_pruning_rnnt")
SLOW_RUN_ALL_MS = 1_500_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_S = 60
PAGE_MS = 60_000
RUN_ALL_MS = 60_000
LESSON_RUN_ALL_MS = 240_000  # trains the tiny teacher and a short compression run when not cached yet
ROUND_TRIP_MS = 30_000

# In the page: the notebook's kernel is ready; the panel's figure is drawn or a cell failed;
# the error outputs of the notebook; a summary of the waveform trace the figure shows.
KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}"""
NOTEBOOK_ERRORS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells, errors = [];
  for (let i = 0; i < cells.length; i++) {
    const outputs = cells.get(i).outputs;
    for (let j = 0; outputs && j < outputs.length; j++) {
      const output = outputs.get(j).toJSON();
      if (output.output_type === 'error') errors.push(`cell ${i}: ${output.ename}: ${output.evalue}`);
    }
  }
  return errors;
}"""
PANEL_DRAWN_OR_FAILED = (
    "() => !!document.querySelector('.widget-vbox .js-plotly-plot .main-svg') || (" + NOTEBOOK_ERRORS + ")().length > 0"
)
TRACE_SUMMARY = """gd => {
  const y = gd._fullData[0].y;  // decoded: the panel's JSON holds arrays as base64
  let total = 0;
  for (let i = 0; i < y.length; i++) total += Math.abs(y[i]);
  return {length: y.length, total: total};
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run there)")
    pytest.skip(reason)


def _chromium() -> str:
    """Path of the system Chromium; skips (fails under CI) when it or Playwright is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _unavailable("no Chromium found: run `make browser-deps` (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright for Python is not installed: run `make setup`")
    return path


def _watch(page) -> list[str]:
    """Collects, as they happen, the page's console errors, uncaught exceptions and failed requests."""
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(f"console error: {message.text[:500]}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"uncaught exception: {str(error)[:500]}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    return problems


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium browser context with a fresh profile, closed after the module."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where screenshots go: ``KDLAB_SCREENSHOTS`` (`make screenshots`: docs/img), else a temporary folder."""
    chosen = os.environ.get("KDLAB_SCREENSHOTS")
    folder = (PROJECT_ROOT / chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def notebook_url(self, name: str) -> str:
        """The notebook `name` (stem) in a workspace of its own: the server is shared, and a page
        opened in the default workspace would also restore the notebooks earlier pages opened."""
        return f"{self.url}/lab/workspaces/{name}/tree/{name}.ipynb?token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free localhost port with a random token, serving notebooks 00, 03 and 04 at
    profile tiny; one server for every notebook of the module (each opens in its own page and kernel)."""
    _chromium()  # skip before starting a server when there is no browser
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from kdlab.data.corpus import ensure_corpus

    ensure_corpus("tiny", progress=False)  # built here, not inside the browser's time limits
    root = tmp_path_factory.mktemp("jupyterlab")
    for source in [NOTEBOOK] + [PROJECT_ROOT / "notebooks" / f"{name}.ipynb" for name in LESSONS + SLOW_LESSONS]:
        notebook = parameterize_notebook(load_notebook_node(str(source)), {"profile": "tiny"})
        if nr.PREFERRED_KERNEL not in find_kernel_specs():
            notebook.metadata.kernelspec = {
                "name": nr.FALLBACK_KERNEL,
                "display_name": "Python 3",
                "language": "python",
            }
        nbformat.write(notebook, root / source.name)
    settings = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast over the panel
    (root / "notary").mkdir()  # notebook trust database and key, kept out of the user's folders

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        f"--LabServerApp.user_settings_dir={root / 'settings'}",
        f"--LabServerApp.workspaces_dir={root / 'workspaces'}",
        f"--NotebookNotary.data_dir={root / 'notary'}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = root / "jupyterlab.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
        try:
            lab = Lab(f"http://127.0.0.1:{port}", token, log_path)
            _wait_until_serving(server, lab)
            yield lab
        finally:
            server.terminate()  # the server shuts its kernels down
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)  # its own process group: the server and its kernels
                server.wait(timeout=10)


def _wait_until_serving(server: subprocess.Popen, lab: Lab) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode} while starting:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{lab.log_tail()}")


def _wait_for(page, expression: str, timeout_ms: int, failure: str, problems: list[str], lab: Lab, arg=None) -> None:
    """Wait until `expression` (JavaScript) is truthy in the page; fail with `failure` and the server's
    log on timeout, or as soon as the browser reports a problem (a widget that cannot load never appears)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_ms / 1000
    while not problems:
        try:
            page.wait_for_function(expression, arg=arg, timeout=1000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{failure} (waited {timeout_ms / 1000:.0f} s); JupyterLab's log ends with:\n{lab.log_tail()}"
                )
    pytest.fail(f"{failure}; the browser reported:\n" + "\n".join(problems))


def test_panel_renders_in_jupyterlab_and_the_snr_slider_updates_the_figure(lab, browser, screenshots):
    page = browser.new_page()
    problems = _watch(page)
    try:
        page.goto(lab.notebook_url(NOTEBOOK.stem), timeout=PAGE_MS)
        _wait_for(page, KERNEL_IDLE, PAGE_MS, "JupyterLab did not open the notebook with an idle kernel", problems, lab)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _wait_for(page, PANEL_DRAWN_OR_FAILED, RUN_ALL_MS, "the synthesis panel's figure was not drawn", problems, lab)
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
        _wait_for(
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


# ---- the panels of notebooks 03 and 04 -------------------------------------------------------------

# In the page: every panel output (a widget VBox holding a plotly figure) as its controls, status
# line and figure show them; the figure read from plotly's own graph div. (textContent: JupyterLab
# does not lay out cells scrolled out of view, and innerText is empty there.)
PANELS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
  .filter(el => { const gd = el.querySelector('.widget-vbox .js-plotly-plot');  // drawn, not mid-redraw
                  return gd && gd.layout && gd._fullData && gd.querySelector('.main-svg'); })
  .map(el => {
    const gd = el.querySelector('.js-plotly-plot');
    const sliders = {};
    el.querySelectorAll('.widget-slider').forEach(s => {
      const label = s.querySelector('.widget-label').textContent.trim();
      sliders[label] = s.querySelector('.widget-readout').textContent.trim();
    });
    const status = el.querySelector('.widget-html-content');
    return {sliders: sliders, status: status ? status.textContent : '', title: (gd.layout.title || {}).text || '',
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
NOTEBOOK_SAVED = "() => window.jupyterapp.commands.execute('docmanager:save').then(() => true)"
#: Per panel (its first slider's label): the value to move that slider to.
MOVES = {"log α": "2.5", "sparsity": "0.4", "rank": "3"}  # sparsity: reachable at tiny (its front-end is ~half)
SCREENSHOT_NAMES = {"log α": "hard_concrete_panel", "sparsity": "sparsity_panel", "rank": "rank_panel"}
LESSON_PANELS = {"03_l0_pruning": ["log α", "sparsity"], "04_low_rank_factorization": ["rank"]}
HEATMAP_LESSONS = {"03_l0_pruning", "05_joint_pruning_rnnt"}  # show gate heatmaps with a step slider


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text.replace(",", ""))
    assert found, f"{pattern!r} not found in {text!r}"
    return float(found.group(1))


def _disagreements(panel: dict) -> list[str]:
    """What the panel's figure, controls and status say differently (empty when they agree)."""
    sliders, status, title = panel["sliders"], panel["status"], panel["title"]
    problems = []
    if "log α" in sliders:  # title: log α, β and the closed-form atoms; status: the same atoms
        if _number(r"log α = (-?[\d.]+)", title) != float(sliders["log α"]):
            problems.append(f"figure title {title!r} vs slider log α {sliders['log α']}")
        if _number(r"P\(z = 0\) = ([\d.]+)", title) != _number(r"P\(z = 0\) = [\d.]+ \(closed form ([\d.]+)\)", status):
            problems.append(f"P(z = 0): figure {title!r} vs status {status!r}")
    elif "sparsity" in sliders:  # status: asked = slider; the figure's title: the status's params / dense
        if _number(r"asked ([\d.]+)", status) != float(sliders["sparsity"]):
            problems.append(f"status {status!r} vs slider sparsity {sliders['sparsity']}")
        params, dense = _number(r"params (\d+) of", status), _number(r"params \d+ of (\d+)", status)
        if f"{params / dense:.1%}" not in title:
            problems.append(f"figure title {title!r} vs status params {params:.0f} of {dense:.0f}")
    elif "rank" in sliders:  # status and the figure's chosen-rank marker: the slider's rank
        rank = int(sliders["rank"])
        if f"rank {rank}:" not in status:
            problems.append(f"status {status[:80]!r} vs slider rank {rank}")
        chosen = [t for t in panel["traces"] if t["name"].startswith("rank ")]
        if len(chosen) != 1 or chosen[0]["x"] != [rank, rank]:
            problems.append(f"chosen-rank marker {chosen} vs slider rank {rank}")
    return problems


def _panels(page, expected: list[str]) -> list[dict]:
    panels = page.evaluate(PANELS)
    shown = [next(iter(p["sliders"]), "?") for p in panels]
    assert shown == expected, f"panels shown (by first slider): {shown}, expected {expected}"
    return panels


def _wait_until_agreeing(
    page, expected: list[str], problems: list[str], failure: str, moved: dict | None = None
) -> list[dict]:
    """Poll the panels until each agrees with itself (and shows `moved`'s slider values); fail with what differs."""
    deadline = time.monotonic() + ROUND_TRIP_MS / 1000
    while True:
        panels = page.evaluate(PANELS)
        shown = [next(iter(p["sliders"]), "?") for p in panels]
        differ = [] if shown == expected else [f"panels shown: {shown}, expected {expected}"]
        for panel in panels if not differ else []:
            differ += _disagreements(panel)
            label = next(iter(panel["sliders"]))
            if moved and float(panel["sliders"][label]) != float(moved[label]):
                differ.append(f"slider {label} shows {panel['sliders'][label]}, moved to {moved[label]}")
        if not differ or problems or time.monotonic() > deadline:
            assert not problems, f"{failure}; the browser reported:\n" + "\n".join(problems)
            assert not differ, f"{failure}:\n" + "\n".join(differ)
            return panels
        time.sleep(0.25)


@pytest.mark.parametrize("name", LESSON_PANELS)
def test_lesson_panels_in_jupyterlab_agree_with_their_sliders_after_moves_and_a_reload(lab, browser, screenshots, name):
    expected = LESSON_PANELS[name]
    page = browser.new_page()
    problems = _watch(page)
    try:
        page.goto(lab.notebook_url(name), timeout=PAGE_MS)
        _wait_for(page, KERNEL_IDLE, PAGE_MS, f"JupyterLab did not open {name} with an idle kernel", problems, lab)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        drawn = f"() => ({PANELS})().length >= {len(expected)} || ({NOTEBOOK_ERRORS})().length > 0"
        _wait_for(page, drawn, LESSON_RUN_ALL_MS, f"{name}: the panels' figures were not drawn", problems, lab)
        _wait_for(page, KERNEL_IDLE, LESSON_RUN_ALL_MS, f"{name}: the notebook did not finish", problems, lab)
        assert not page.evaluate(NOTEBOOK_ERRORS), f"{name} failed in JupyterLab: {page.evaluate(NOTEBOOK_ERRORS)}"
        if name in HEATMAP_LESSONS:  # the gate heatmaps' step slider, drawn by JupyterLab's plotly renderer
            heatmap = "() => !!document.querySelector('.js-plotly-plot .slider-group')"
            _wait_for(page, heatmap, PAGE_MS, f"{name}: no gate heatmap with a step slider", problems, lab)
            state = page.evaluate(HEATMAP_STATE)
            assert len(state["frames"]) >= 2, f"{name}: the heatmap has {len(state['frames'])} recorded steps"
            _heatmap_label_clears_the_buttons(state)
            _click_heatmap_steps(page, (0, len(state["frames"]) - 1), problems)
        # Re-running the panel cells must not leave their earlier widgets alive: a reload loads every
        # live widget, and their number would grow with every re-run.
        for _ in range(2):
            page.evaluate(RERUN_PANEL_CELLS)
            _wait_for(
                page,
                KERNEL_IDLE,
                LESSON_RUN_ALL_MS,
                f"{name}: re-running the panel cells did not finish",
                problems,
                lab,
            )
        before = _wait_until_agreeing(page, expected, problems, f"{name}: a panel disagrees with itself after the run")
        live = page.evaluate(LIVE_PANEL_FIGURES)
        assert live == str(len(expected)), (
            f"{name}: {live} panel figures (Output widgets) alive in the kernel after re-runs, not {len(expected)}"
        )

        moved = {label: MOVES[label] for label in expected}
        for index, label in enumerate(expected):
            panel = page.locator(".jp-OutputArea-output", has=page.locator(".widget-vbox .js-plotly-plot")).nth(index)
            panel.locator(".widget-slider", has_text=label).first.locator(".widget-readout").click()
            page.keyboard.press("Control+A")
            page.keyboard.type(moved[label])
            page.keyboard.press("Enter")
        after = _wait_until_agreeing(
            page, expected, problems, f"{name}: a panel disagrees after moving its slider", moved
        )
        for old, new, label in zip(before, after, expected):
            assert (old["title"], old["traces"]) != (new["title"], new["traces"]), (
                f"moving {label} left its figure as it was"
            )

        page.mouse.move(0, 0)  # no hover toolbar over the figures
        for index, label in enumerate(expected):
            cell = page.locator(".jp-Cell", has=page.locator(".widget-vbox .js-plotly-plot")).nth(index)
            cell.scroll_into_view_if_needed()
            cell.screenshot(path=str(screenshots / f"{name[:2]}_{SCREENSHOT_NAMES[label]}.png"))

        # A reload with the kernel alive draws the panels from the kernel's widget state.
        assert page.evaluate(NOTEBOOK_SAVED)
        assert not problems, "the browser reported problems before the reload:\n" + "\n".join(problems)
        page.reload(timeout=PAGE_MS)
        problems[:] = [p for p in problems if "net::ERR_ABORTED" not in p]  # the old page's requests, cut by the reload
        _wait_for(page, KERNEL_IDLE, PAGE_MS, f"{name}: no idle kernel after the reload", problems, lab)
        reloaded = _wait_until_agreeing(
            page, expected, problems, f"{name}: a panel disagrees after a page reload", moved
        )
        for shown, label in zip(reloaded, expected):
            assert shown["sliders"][label] == after[expected.index(label)]["sliders"][label]
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()


PLOTLY_OUTPUTS_DRAWN = """() => {
  const outputs = Array.from(document.querySelectorAll('.jp-OutputArea-output'))
    .filter(el => el.querySelector('.js-plotly-plot'));
  return outputs.map(el => !!el.querySelector('.js-plotly-plot .main-svg'));
}"""


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KDLAB_SLOW_BROWSER") != "1", reason="minutes of training at tiny: `make browser-slow` runs it"
)
@pytest.mark.parametrize("name", SLOW_LESSONS)
def test_lessons_without_panels_run_in_jupyterlab_and_draw_every_figure(lab, browser, name):
    """02 and 05 run whole in JupyterLab: no error, no console error, every plotly output drawn; 05's
    gate heatmap follows its step slider."""
    page = browser.new_page()
    problems = _watch(page)
    try:
        page.goto(lab.notebook_url(name), timeout=PAGE_MS)
        _wait_for(page, KERNEL_IDLE, PAGE_MS, f"JupyterLab did not open {name} with an idle kernel", problems, lab)
        all_run = (
            "() => window.jupyterapp.shell.currentWidget.content.widgets"
            ".every(cell => cell.model.type !== 'code' || cell.model.executionCount !== null)"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        finished = f"() => ({all_run})() || ({NOTEBOOK_ERRORS})().length > 0"
        _wait_for(page, finished, SLOW_RUN_ALL_MS, f"{name}: the notebook did not finish", problems, lab)
        _wait_for(page, KERNEL_IDLE, PAGE_MS, f"{name}: the kernel did not go idle", problems, lab)
        assert not page.evaluate(NOTEBOOK_ERRORS), f"{name} failed in JupyterLab: {page.evaluate(NOTEBOOK_ERRORS)}"
        every = f"() => {{ const d = ({PLOTLY_OUTPUTS_DRAWN})(); return d.length >= 3 && d.every(x => x); }}"
        # JupyterLab's plotly renderer draws a while after the outputs arrive
        _wait_for(page, every, PAGE_MS, f"{name}: not every plotly output was drawn", problems, lab)
        if name in HEATMAP_LESSONS:
            state = page.evaluate(HEATMAP_STATE)
            _heatmap_label_clears_the_buttons(state)
            _click_heatmap_steps(page, (0, len(state["frames"]) - 1), problems)
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Notebook 00 run by the command `make study` uses, at profile tiny; or, with
    ``KDLAB_CHECK_OUTPUTS=<folder>``, that finished output folder (`make check-report`)."""
    finished = os.environ.get("KDLAB_CHECK_OUTPUTS")
    if finished:
        folder = Path(finished).resolve()
        if not (folder / "index.html").is_file():
            pytest.fail(f"KDLAB_CHECK_OUTPUTS={finished}: no index.html there; run `make study` first")
        return folder
    out = tmp_path_factory.mktemp("outputs")
    command = [sys.executable, "-m", "kdlab", "notebooks", "--profile", "tiny", "--only", "00", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert result.returncode == 0, (
        f"`{' '.join(command[1:])}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return out


def _open(browser, path: Path):
    """Open a local page; returns it and the list its problems are collected in."""
    page = browser.new_page()
    problems = _watch(page)
    page.goto(path.as_uri(), wait_until="load", timeout=PAGE_MS)
    return page, problems


def _wait_for_drawn(page, count: int) -> None:
    """Wait until `count` plotly figures are drawn (SVG) in the page; on timeout return, so the
    caller's assertion says which are missing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    script = (
        "n => Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".filter(el => el.querySelector('.main-svg')).length >= n"
    )
    try:
        page.wait_for_function(script, arg=count, timeout=PAGE_MS)
    except PlaywrightTimeout:
        pass


def _drawn(page, selector: str) -> list[bool]:
    """For each element matching `selector`: does it hold a plotly figure drawn as SVG?"""
    return page.locator(selector).evaluate_all("els => els.map(el => !!el.querySelector('.js-plotly-plot .main-svg'))")


def test_index_loads_offline_without_errors_and_shows_each_notebooks_figures(browser, study, screenshots):
    with_figures = [
        p.stem for p in sorted(study.glob("*.ipynb")) if nr.notebook_figures(nbformat.read(p, as_version=4))
    ]
    assert with_figures, "notebook 00 shows figures; the index must have some to check"
    page, problems = _open(browser, study / "index.html")
    try:
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_MS)
        for name in with_figures:
            drawn = _drawn(page, f"figure:has(a[href^='html/{name}.html'])")
            assert drawn and all(drawn), f"index.html: the key figure(s) of {name} are missing or not drawn: {drawn}"
        if (study / "study" / "results.json").is_file():  # a study ran: its table is on the page
            assert page.locator("h2", has_text="Study results").count() == 1
            assert page.locator("table").count() >= 2, "the study's results and claims tables"
        page.screenshot(path=str(screenshots / "index.png"))
        assert not problems, "index.html: the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()


def test_reports_load_offline_without_errors_and_draw_every_figure(browser, study):
    for executed in sorted(study.glob("*.ipynb")):
        expected = len(nr.notebook_figures(nbformat.read(executed, as_version=4)))
        page, problems = _open(browser, study / "html" / f"{executed.stem}.html")
        try:
            if expected:  # large figures draw one after another: wait for all of them (or time out)
                _wait_for_drawn(page, expected)
            drawn = page.locator(".js-plotly-plot").evaluate_all(
                "els => els.map(el => !!el.querySelector('.main-svg'))"
            )
            assert len(drawn) == expected and all(drawn), (
                f"{executed.stem}: {expected} figures expected, drawn: {drawn}"
            )
            assert not problems, f"{executed.stem}.html: the browser reported problems:\n" + "\n".join(problems)
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
        page, problems = _open(browser, path)
        try:
            if on_load:
                _wait_for_drawn(page, 1)
                assert _drawn(page, "body") == [True] and not problems, problems
            else:  # the failure this guards against
                assert any("Plotly is not defined" in p for p in problems), problems
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
    problems = _watch(page)
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


# ---- the gate heatmaps' step slider (notebooks 03 and 05) -------------------------------------------

# In the page: the first plotly figure with a step slider (a gate heatmap) as drawn: its heatmap, the
# step label shown, the boxes of its play buttons and of that label, and its frames (name, z).
HEATMAP_STATE = """() => {
  const decode = v => {  // plotly's base64 array {dtype, bdata, shape} as nested arrays
    if (!v || !v.bdata) return v;
    const bytes = Uint8Array.from(atob(v.bdata), c => c.charCodeAt(0));
    const types = {f8: Float64Array, f4: Float32Array, i4: Int32Array, i2: Int16Array, i1: Int8Array, u1: Uint8Array};
    const flat = Array.from(new types[v.dtype](bytes.buffer));
    const shape = String(v.shape || flat.length).split(',').map(Number);
    const row = i => flat.slice(i * shape[1], (i + 1) * shape[1]);
    return shape.length < 2 ? flat : Array.from({length: shape[0]}, (_, i) => row(i));
  };
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot')).find(g => g.querySelector('.slider-group'));
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const current = gd.querySelector('.slider-group > .slider-label');  // the step shown; tick labels are in groups
  return {z: gd.calcdata[0][0].z.map(row => Array.from(row)), label: current.textContent,
          buttons: box(gd.querySelector('.updatemenu-container')), current: box(current),
          frames: gd._transitionData._frames.map(f => ({name: String(f.name), z: decode(f.data[0].z)}))};
}"""
HEATMAP_SHOWS = (
    f"([label, z]) => {{ const s = ({HEATMAP_STATE})(); return s.label === label && "
    "s.z.every((row, i) => row.every((v, j) => Math.abs(v - z[i][j]) < 1e-9)); }"
)


def _heatmap_label_clears_the_buttons(state: dict) -> None:
    left, top, right, bottom = state["buttons"]
    l2, t2, r2, b2 = state["current"]
    assert right <= l2 or r2 <= left or bottom <= t2 or b2 <= top, (
        f"the step label {state['current']} overlaps the buttons {state['buttons']}"
    )


def _click_heatmap_steps(page, indices, problems: list[str]) -> None:
    """Click the slider's tick label of each recorded step in `indices`; the label and the heatmap
    (its frame's z, read from the figure's own frames) must follow."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    figure = page.locator(".js-plotly-plot", has=page.locator(".slider-group")).first
    figure.scroll_into_view_if_needed()
    frames = page.evaluate(HEATMAP_STATE)["frames"]
    for index in indices:
        name = frames[index]["name"]
        tick = figure.locator(".slider-label-group").filter(has_text=re.compile(f"^{name}$")).bounding_box()
        rail = figure.locator(".slider-rail-rect").first.bounding_box()
        page.mouse.click(tick["x"] + tick["width"] / 2, rail["y"] + rail["height"] / 2)
        try:  # the label moves at once, the heatmap once the frame is drawn
            page.wait_for_function(HEATMAP_SHOWS, arg=[f"step {name}", frames[index]["z"]], timeout=ROUND_TRIP_MS)
        except PlaywrightTimeout:
            state = {k: v for k, v in page.evaluate(HEATMAP_STATE).items() if k != "frames"}
            pytest.fail(f"clicking step {name} on the slider: the page shows {state}; problems: {problems}")


def test_gate_heatmap_slider_shows_each_recorded_step_and_its_label_clears_the_buttons(browser, tmp_path):
    import numpy as np

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
    page, problems = _open(browser, path)
    try:
        _wait_for_drawn(page, 1)  # a report's figure plays its frames once on load; it ends on the last record
        page.wait_for_function(f"() => ({HEATMAP_STATE})().label === 'step 30'", timeout=ROUND_TRIP_MS)
        state = page.evaluate(HEATMAP_STATE)
        assert np.allclose(state["z"], figure.frames[-1].data[0].z)
        assert [f["name"] for f in state["frames"]] == [f.name for f in figure.frames]
        _heatmap_label_clears_the_buttons(state)
        _click_heatmap_steps(page, (1, 0), problems)
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()
