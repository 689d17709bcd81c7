"""Notebooks 02–04 (distillation, L0 pruning, low-rank factorisation) run headless at tiny settings.

Each notebook is executed with papermill (profile "tiny": the tiny SSL teacher and a few
training steps per run) and must finish without an error, with every code cell run, its
self-checks (asserts in the cells) passed, and its figures and widget panels shown.
"""

from __future__ import annotations

import pytest
from stand_ins import assert_lesson_explains_and_checks_itself, assert_ran_headless_at_tiny, execute_lessons

from kdlab.report import notebook_runner as nr

LESSONS = ["02_knowledge_distillation", "03_l0_pruning", "04_low_rank_factorization"]


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
