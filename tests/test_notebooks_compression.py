"""Notebooks 02–04 (distillation, L0 pruning, low-rank factorisation) at tiny settings, headless
and in JupyterLab.

Each notebook is executed with papermill (profile "tiny": the tiny SSL teacher and a few
training steps per run) and must finish without an error, with every code cell run, its
self-checks (asserts in the cells) passed, and its figures and widget panels shown.

Then in JupyterLab in headless Chromium (tests/jupyterlab_pages.py), as a student sees them:
02 (no widgets) reopened with its outputs, every figure drawn; 03 and 04 run whole (loading the
runs the headless run trained), their panels following every control before and after a reload
(tests/lesson_panels.py), 03's gate heatmaps following their step sliders; no console error.
"""

from __future__ import annotations

import pytest
from jupyterlab_pages import (
    check_executed_notebook,
    jupyterlab,
    lesson_at_tiny,
    open_notebook,
    screenshot_folder,
)
from lesson_panels import LESSON_PANELS, run_and_check_panels
from stand_ins import assert_lesson_explains_and_checks_itself, assert_ran_headless_at_tiny, execute_lessons

from kdlab.report import notebook_runner as nr

LESSONS = ["02_knowledge_distillation", "03_l0_pruning", "04_low_rank_factorization"]
WITHOUT_PANELS = ["02_knowledge_distillation"]  # reopened with the headless run's outputs


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_explains_the_math_and_checks_itself(name):
    assert_lesson_explains_and_checks_itself(name)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    return execute_lessons(LESSONS, tmp_path_factory.mktemp("lessons"))


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_headless_at_tiny_settings(executed, name):
    assert_ran_headless_at_tiny(executed[name], name)


@pytest.mark.parametrize(
    "name, figures, panels",
    [
        ("02_knowledge_distillation", 4, 0),  # layer-KD curves, softmax bars, output-KD curve, agreement bars
        (
            "03_l0_pruning",
            4,
            2,
        ),  # sparsity, losses, ≥ 1 gate heatmap, remaining ratios; hard-concrete + sparsity panels
        ("04_low_rank_factorization", 5, 1),  # 3 spectra, LRF curves, rank evolution; the rank panel
    ],
)
def test_lesson_shows_its_figures_and_panels(executed, name, figures, panels):
    outputs = [o for cell in executed[name].cells if cell.cell_type == "code" for o in cell.outputs]
    shown = sum(nr.PLOTLY_MIMETYPE in o.get("data", {}) for o in outputs)
    widgets = sum(nr.WIDGET_VIEW_MIMETYPE in o.get("data", {}) for o in outputs)
    assert shown >= figures, f"{name}: {shown} plotly figures shown, expected at least {figures}"
    assert widgets == panels, f"{name}: {widgets} widget panels shown, expected {panels}"


# ---- in JupyterLab -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(executed, tmp_path_factory):
    """JupyterLab serving 02 as the headless run left it and 03, 04 at profile tiny to run (after
    the headless runs: the runs they load are trained)."""
    notebooks = {name: executed[name] for name in WITHOUT_PANELS}
    notebooks |= {name: lesson_at_tiny(name) for name in LESSON_PANELS}
    with jupyterlab(tmp_path_factory.mktemp("jupyterlab"), notebooks, trusted=tuple(WITHOUT_PANELS)) as served:
        yield served


@pytest.mark.browser
@pytest.mark.parametrize("name", WITHOUT_PANELS)
def test_lesson_reopened_in_jupyterlab_draws_every_figure(executed, lab, browser, name):
    check_executed_notebook(browser, lab, name, executed[name])


@pytest.mark.browser
@pytest.mark.parametrize("name", LESSON_PANELS)
def test_lesson_panels_in_jupyterlab_agree_with_their_controls_after_moves_and_a_reload(
    lab, browser, tmp_path_factory, name
):
    page, problems = open_notebook(browser, lab, name)
    try:
        run_and_check_panels(page, problems, lab, name, screenshot_folder(tmp_path_factory))
    finally:
        page.close()
