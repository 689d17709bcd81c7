"""Notebooks in a real browser: the system's headless Chromium (Playwright for Python, which never
downloads a browser here) and a JupyterLab server on localhost, for the browser tests of
test_browser.py (notebook 00, the reports) and of the lessons' test files (02–06).

Chromium is the Debian package (`make browser-deps`). Without it, or without Playwright, the tests
skip, except under CI (``CI=true``), where they fail. Screenshots go to a temporary folder, or to
``KDLAB_SCREENSHOTS`` when set (`make screenshots`: docs/img), so the tests never change tracked files.

Also here: what a page shows that several tests read (the kernel's state, a notebook's errors,
its drawn plotly outputs) and the gate heatmaps' step slider, which notebooks 03 and 05 and the
reports show.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs

from kdlab.paths import PROJECT_ROOT
from kdlab.report import notebook_runner as nr

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
ROUND_TRIP_MS = 30_000

# In the page: the notebook's kernel is ready; the error outputs of the notebook; for each output
# holding plotly figures, whether plotly drew it (SVG).
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
PLOTLY_OUTPUTS_DRAWN = """() => {
  // JupyterLab's plotly renderer makes the output node itself the plot (class js-plotly-plot)
  const plot = el => el.matches('.js-plotly-plot') ? el : el.querySelector('.js-plotly-plot');
  const outputs = Array.from(document.querySelectorAll('.jp-OutputArea-output')).filter(plot);
  return outputs.map(el => !!plot(el).querySelector('.main-svg'));
}"""
NOTEBOOK_SAVED = "() => window.jupyterapp.commands.execute('docmanager:save').then(() => true)"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run there)")
    pytest.skip(reason)


def chromium() -> str:
    """Path of the system Chromium; skips (fails under CI) when it or Playwright is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("no Chromium found: run `make browser-deps` (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("Playwright for Python is not installed: run `make setup`")
    return path


@contextmanager
def chromium_context(profile: Path) -> Iterator:
    """A Playwright browser context of the system Chromium with a fresh profile in `profile`."""
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            yield context
        finally:
            context.close()


def screenshot_folder(tmp_path_factory) -> Path:
    """Where screenshots go: ``KDLAB_SCREENSHOTS`` (`make screenshots`: docs/img), else a temporary folder."""
    chosen = os.environ.get("KDLAB_SCREENSHOTS")
    folder = (PROJECT_ROOT / chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watch(page) -> list[str]:
    """Collects, as they happen, the page's console errors, uncaught exceptions and failed requests."""
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(f"console error: {message.text[:500]}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"uncaught exception: {str(error)[:500]}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    return problems


def open_page(browser, path: Path):
    """Open a local page; returns it and the list its problems are collected in."""
    page = browser.new_page()
    problems = watch(page)
    page.goto(path.as_uri(), wait_until="load", timeout=PAGE_MS)
    return page, problems


def wait_for_drawn(page, count: int) -> None:
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


def drawn_figures(page, selector: str) -> list[bool]:
    """For each element matching `selector`: does it hold a plotly figure drawn as SVG?"""
    return page.locator(selector).evaluate_all("els => els.map(el => !!el.querySelector('.js-plotly-plot .main-svg'))")


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


def lesson_at_tiny(name: str):
    """``notebooks/<name>.ipynb`` with ``profile = "tiny"`` injected, as a student would set it."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    source = PROJECT_ROOT / "notebooks" / f"{name}.ipynb"
    return parameterize_notebook(load_notebook_node(str(source)), {"profile": "tiny"})


@contextmanager
def jupyterlab(root: Path, notebooks: dict, trusted: tuple[str, ...] = ()) -> Iterator[Lab]:
    """JupyterLab on a free localhost port with a random token, serving `notebooks` ({stem:
    notebook node}) from `root`; those named in `trusted` are signed, as a notebook whose outputs
    the user made (an executed notebook's plotly outputs are drawn only then). Kernels run with one
    torch thread: tiny models gain nothing from more, and the test machine has other work."""
    chromium()  # skip before starting a server when there is no browser
    from nbformat.sign import NotebookNotary

    (root / "notary").mkdir(parents=True)  # notebook trust database and key, kept out of the user's folders
    notary = NotebookNotary(data_dir=str(root / "notary"))
    for name, notebook in notebooks.items():
        if nr.PREFERRED_KERNEL not in find_kernel_specs():
            notebook.metadata.kernelspec = {
                "name": nr.FALLBACK_KERNEL,
                "display_name": "Python 3",
                "language": "python",
            }
        if name in trusted:
            notary.sign(notebook)
        nbformat.write(notebook, root / f"{name}.ipynb")
    settings = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast over the panel

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
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"), OMP_NUM_THREADS="1")
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


def wait_for(page, expression: str, timeout_ms: int, failure: str, problems: list[str], lab: Lab, arg=None) -> None:
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


# Run in every JupyterLab page before its own scripts. When a page (re)loads a notebook whose
# kernel holds widgets, JupyterLab can render a widget output twice, and the first renderer, no
# longer in the page, may still ask the widget manager for its model. The manager gives up after
# 2 s without a last look (ipywidgets' get_model; the restore registered the model meanwhile)
# and that renderer logs "widget model not found" into a node nobody sees, while the renderer in
# the page draws the panel. Measured on notebook 03 at 3x CPU throttling: 4 of 16 reloads, each
# time with no error shown. Such a log becomes a warning here; the same error while an output in
# the page shows "Error displaying widget" (what a student would see) stays an error.
HIDDEN_WIDGET_RENDER_ERRORS = """(() => {
  const error = console.error;
  const shown = () => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
    .some(el => el.textContent.includes('Error displaying widget'));
  console.error = function (...args) {
    if (String(args[0]).includes('widget model not found') && !shown()) {
      return console.warn('[kdlab tests] a renderer outside the page:', ...args);
    }
    return error.apply(this, args);
  };
})();"""


def open_notebook(browser, lab: Lab, name: str):
    """A new page showing notebook `name` with an idle kernel; returns it and its problem list
    (console errors but those of ``HIDDEN_WIDGET_RENDER_ERRORS``)."""
    page = browser.new_page()
    page.add_init_script(HIDDEN_WIDGET_RENDER_ERRORS)
    problems = watch(page)
    try:
        page.goto(lab.notebook_url(name), timeout=PAGE_MS)
        wait_for(page, KERNEL_IDLE, PAGE_MS, f"JupyterLab did not open {name} with an idle kernel", problems, lab)
    except BaseException:
        page.close()
        raise
    return page, problems


def reload_notebook(page, problems: list[str], lab: Lab, name: str) -> None:
    """Reload the page (the kernel stays alive) and wait for its kernel again; the requests the
    reload cut are not the application's errors."""
    page.reload(timeout=PAGE_MS)
    problems[:] = [p for p in problems if "net::ERR_ABORTED" not in p]
    wait_for(page, KERNEL_IDLE, PAGE_MS, f"{name}: no idle kernel after the reload", problems, lab)


def wait_until_every_figure_is_drawn(page, problems: list[str], lab: Lab, name: str, at_least: int) -> int:
    """Wait until the notebook shows at least `at_least` plotly outputs, each drawn by JupyterLab's
    plotly renderer (it draws a while after the outputs arrive); returns how many it shows."""
    every = f"() => {{ const d = ({PLOTLY_OUTPUTS_DRAWN})(); return d.length >= {at_least} && d.every(x => x); }}"
    wait_for(page, every, PAGE_MS, f"{name}: not every plotly output was drawn", problems, lab)
    return len(page.evaluate(PLOTLY_OUTPUTS_DRAWN))


# ---- the gate heatmaps' step slider (notebooks 03 and 05, and the reports) --------------------------

# In the page: the `index`-th plotly figure with a step slider (a gate heatmap) as drawn: its
# heatmap, the step label shown, the boxes of its play buttons and of that label, and its frames
# (name, z).
HEATMAP_STATE = """index => {
  const decode = v => {  // plotly's base64 array {dtype, bdata, shape} as nested arrays
    if (!v || !v.bdata) return v;
    const bytes = Uint8Array.from(atob(v.bdata), c => c.charCodeAt(0));
    const types = {f8: Float64Array, f4: Float32Array, i4: Int32Array, i2: Int16Array, i1: Int8Array, u1: Uint8Array};
    const flat = Array.from(new types[v.dtype](bytes.buffer));
    const shape = String(v.shape || flat.length).split(',').map(Number);
    const row = i => flat.slice(i * shape[1], (i + 1) * shape[1]);
    return shape.length < 2 ? flat : Array.from({length: shape[0]}, (_, i) => row(i));
  };
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.querySelector('.slider-group'))[index || 0];  // Playwright passes null without an argument
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const current = gd.querySelector('.slider-group > .slider-label');  // the step shown; tick labels are in groups
  return {z: gd.calcdata[0][0].z.map(row => Array.from(row)), label: current.textContent,
          title: (gd.layout.title || {}).text || '',
          buttons: box(gd.querySelector('.updatemenu-container')), current: box(current),
          frames: gd._transitionData._frames.map(f => ({name: String(f.name), z: decode(f.data[0].z)}))};
}"""
HEATMAPS_WITH_SLIDERS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(g => g.querySelector('.slider-group')).length"""
HEATMAP_SHOWS = (
    f"([index, label, z]) => {{ const s = ({HEATMAP_STATE})(index); return s.label === label && "
    "s.z.every((row, i) => row.every((v, j) => Math.abs(v - z[i][j]) < 1e-9)); }"
)


def heatmap_label_clears_the_buttons(state: dict) -> None:
    left, top, right, bottom = state["buttons"]
    l2, t2, r2, b2 = state["current"]
    assert right <= l2 or r2 <= left or bottom <= t2 or b2 <= top, (
        f"the step label {state['current']} overlaps the buttons {state['buttons']}"
    )


def heatmap_shows_its_labelled_step(page, index: int, problems: list[str]) -> dict:
    """The `index`-th heatmap's z is the frame its step label names (waits for a drawing frame);
    returns its state."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    state = page.evaluate(HEATMAP_STATE, index)
    frame = next((f for f in state["frames"] if f"step {f['name']}" == state["label"]), None)
    assert frame is not None, f"heatmap {index} ({state['title']}): label {state['label']!r} names no recorded step"
    try:
        page.wait_for_function(HEATMAP_SHOWS, arg=[index, state["label"], frame["z"]], timeout=ROUND_TRIP_MS)
    except PlaywrightTimeout:
        pytest.fail(f"heatmap {index} ({state['title']}): shows {state['label']!r} but not its frame; {problems}")
    return state


def click_heatmap_steps(page, indices, problems: list[str], figure_index: int = 0) -> None:
    """On the `figure_index`-th heatmap, click the slider's tick label of each recorded step in
    `indices`; the label and the heatmap (its frame's z, read from the figure's own frames) must follow."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    figure = page.locator(".js-plotly-plot", has=page.locator(".slider-group")).nth(figure_index)
    figure.scroll_into_view_if_needed()
    frames = page.evaluate(HEATMAP_STATE, figure_index)["frames"]
    for index in indices:
        name = frames[index]["name"]
        tick = figure.locator(".slider-label-group").filter(has_text=re.compile(f"^{name}$")).bounding_box()
        rail = figure.locator(".slider-rail-rect").first.bounding_box()
        page.mouse.click(tick["x"] + tick["width"] / 2, rail["y"] + rail["height"] / 2)
        try:  # the label moves at once, the heatmap once the frame is drawn
            page.wait_for_function(
                HEATMAP_SHOWS, arg=[figure_index, f"step {name}", frames[index]["z"]], timeout=ROUND_TRIP_MS
            )
        except PlaywrightTimeout:
            state = {k: v for k, v in page.evaluate(HEATMAP_STATE, figure_index).items() if k != "frames"}
            pytest.fail(f"clicking step {name} on the slider: the page shows {state}; problems: {problems}")


def check_every_heatmap_slider(page, problems: list[str], at_least: int) -> int:
    """Each gate heatmap with a step slider: its label names the frame it shows and clears the play
    buttons; clicking its first and its last recorded step shows those frames. Returns how many."""
    count = page.evaluate(HEATMAPS_WITH_SLIDERS)
    assert count >= at_least, f"{count} gate heatmaps with a step slider, expected at least {at_least}"
    for index in range(count):
        state = heatmap_shows_its_labelled_step(page, index, problems)
        assert len(state["frames"]) >= 2, f"heatmap {index} has {len(state['frames'])} recorded steps"
        heatmap_label_clears_the_buttons(state)
        click_heatmap_steps(page, (0, len(state["frames"]) - 1), problems, index)
    return count


def plotly_figures(notebook) -> list[dict]:
    """The plotly figures (JSON) an executed notebook's outputs hold, in order."""
    return [
        output["data"][nr.PLOTLY_MIMETYPE]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if nr.PLOTLY_MIMETYPE in output.get("data", {})
    ]


def check_executed_notebook(browser, lab: Lab, name: str, notebook) -> None:
    """Notebook `name`, executed headless (`notebook`) and served with its outputs (trusted), as a
    student reopening it sees it: each of its plotly outputs drawn, no console error. Each gate
    heatmap (a figure with a step slider) shows the step its label names, its label clear of the
    play buttons, and follows clicks on its first and last step, also after a page reload."""
    figures = plotly_figures(notebook)
    heatmaps = sum(bool(figure["layout"].get("sliders")) for figure in figures)
    page, problems = open_notebook(browser, lab, name)
    try:
        assert not page.evaluate(NOTEBOOK_ERRORS), f"{name}: {page.evaluate(NOTEBOOK_ERRORS)}"
        for moment in ("opened", "reloaded") if heatmaps else ("opened",):
            if moment == "reloaded":
                reload_notebook(page, problems, lab, name)
            drawn = wait_until_every_figure_is_drawn(page, problems, lab, name, len(figures))
            assert drawn == len(figures), f"{name} ({moment}): {drawn} plotly outputs shown of {len(figures)}"
            if heatmaps:
                shown = check_every_heatmap_slider(page, problems, heatmaps)
                assert shown == heatmaps, f"{name} ({moment}): {shown} heatmaps with a step slider of {heatmaps}"
            assert not problems, f"{name} ({moment}): the browser reported problems:\n" + "\n".join(problems)
    finally:
        page.close()
