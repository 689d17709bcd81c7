"""Notebooks 05 (joint pruning with RNN-T) and 06 (the study's results) run headless at tiny
settings, and the helpers behind them (``kdlab.lessons.study_grid``) behave.

Both notebooks run with papermill at profile "tiny" in the KDLAB_HOME of the session's tiny grid
(tests/tiny_grid.py: every row of the study grid at the lessons' smoke budgets, trained from
nothing through the CLI; outputs/ empty): 05 finds its teachers and rows trained, then 06 finds no
study outputs, runs the tiny smoke grid (every row trained) and shows it. Each must finish
without an error, every code cell run, its self-checks (asserts in the cells) passed and its
figures shown; what 06 shows must be what the study wrote. 05 reopened in
JupyterLab in headless Chromium with those outputs (tests/jupyterlab_pages.py), as a student sees
it: every figure drawn, each gate heatmap following its step slider, before and after a page
reload, and no console error.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest
import torch
from jupyterlab_pages import check_executed_notebook, jupyterlab
from stand_ins import (
    assert_lesson_explains_and_checks_itself,
    assert_ran_headless_at_tiny,
    execute_lessons,
)

from kdlab.compress.hardconcrete import HardConcreteGate
from kdlab.compress.param_count import expected_params
from kdlab.lessons import study_grid as sl
from kdlab.paths import PROJECT_ROOT
from kdlab.report import notebook_runner as nr
from kdlab.study import StudyConfig, StudyResults
from kdlab.study.recipes import GridRuns
from kdlab.train.recipes.profiles import get_profile

JOINT, STUDY = "05_joint_pruning_rnnt", "06_study_results"
LESSONS = [JOINT, STUDY]


def _source(name: str):
    return nbformat.read(PROJECT_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def _outputs(notebook, tag: str | None = None) -> list[dict]:
    cells = [c for c in notebook.cells if c.cell_type == "code" and (tag is None or tag in c.metadata.get("tags", []))]
    return [o for cell in cells for o in cell.outputs]


def _figure_titles(notebook) -> list[str]:
    return [
        o["data"][nr.PLOTLY_MIMETYPE]["layout"].get("title", {}).get("text", "")
        for o in _outputs(notebook)
        if nr.PLOTLY_MIMETYPE in o.get("data", {})
    ]


def _text(notebook, cell_id: str) -> str:
    """Everything a cell printed or displayed (stream text, HTML and Markdown)."""
    cell = next(c for c in notebook.cells if c.id == cell_id)
    parts = [o.get("text", "") for o in cell.outputs]
    parts += [o.get("data", {}).get(kind, "") for o in cell.outputs for kind in ("text/html", "text/markdown")]
    return "\n".join(parts)


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_explains_the_math_and_checks_itself(name):
    notebook = assert_lesson_explains_and_checks_itself(name)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code_cells), f"{name}: committed with outputs"


def test_the_joint_lesson_writes_out_the_joint_loss():
    markdown = "\n".join(c.source for c in _source(JOINT).cells if c.cell_type == "markdown")
    assert r"\lambda_1(\hat s - t) + \lambda_2(\hat s - t)^2" in markdown
    assert r"-\tfrac{1}{N}\log P(y \mid x)" in markdown and r"\mathrm{KL}" in markdown  # RNN-T per token
    assert r"\mathcal{L}_{\text{CTC}}" in markdown and r"\mathcal{L}_{\text{BEST-RQ}}" in markdown


@pytest.fixture(scope="module")
def home(tiny_grid):
    """The KDLAB_HOME of the session's tiny grid (its runs/, empty outputs/), set for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDLAB_HOME", str(tiny_grid.home))
        yield tiny_grid.home


@pytest.fixture(scope="module")
def executed(home, tmp_path_factory):
    # kd+lrf+l0: every kind of gate and the rank figures (the notebook's default is kd+l0)
    return execute_lessons(LESSONS, tmp_path_factory.mktemp("lessons"), {JOINT: {"method": "kd+lrf+l0"}})


@pytest.fixture(scope="module")
def results(home, executed):
    """results.json of the study notebook 06 ran (the home's outputs/ had none)."""
    return json.loads((home / "outputs" / "study" / "results.json").read_text())


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_headless_at_tiny_settings(executed, name):
    assert_ran_headless_at_tiny(executed[name], name)


def test_the_joint_lesson_shows_evolution_comparison_and_streaming_figures(executed):
    titles = _figure_titles(executed[JOINT])
    for part in (
        "RNN-T",
        "KD terms",
        "target t vs expected sparsity",
        "P(z ≠ 0) of the attention heads",
        "expected rank per matrix",
        "expected sparsity ŝ in each route",
        "test WER vs encoder parameters",
        "per-call latency",
    ):
        assert any(part in title for title in titles), f"no figure titled with {part!r} among {titles}"
    assert not any(nr.WIDGET_VIEW_MIMETYPE in o.get("data", {}) for o in _outputs(executed[JOINT]))


def test_the_study_lesson_shows_pareto_per_mode_and_rwer_bars(executed, results):
    titles = _figure_titles(executed[STUDY])
    for mode in results["config"]["modes"]:
        assert f"{mode}: test WER vs encoder parameters" in titles
    assert "Relative WER vs the KD baseline (positive = better than KD)" in titles
    key = [o for o in _outputs(executed[STUDY], "key-figure") if nr.PLOTLY_MIMETYPE in o.get("data", {})]
    assert len(key) == len(results["config"]["modes"]) + 1, "key figures: a Pareto figure per mode, the RWER bars"


def test_the_study_lesson_ran_the_smoke_grid_and_shows_every_row_of_results_json(executed, results):
    assert results["config"]["profile"] == "tiny"
    assert results["config"]["methods"] == list(get_profile("tiny").lesson_grid_smoke["methods"])
    outputs = _outputs(executed[STUDY], "study-rows")
    shown = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(shown) == 1
    tbody = shown[0].split("<tbody>", 1)[1]
    keys = re.findall(r"<tr>\s*<th>([^<]+)</th>", tbody)
    assert keys == [row["key"] for row in results["rows"]]


def test_the_study_lesson_shows_the_papers_numbers_and_the_computed_verdicts(executed, results):
    cell = next(c for c in executed[STUDY].cells if "paper RWER %" in c.source)
    html = _text(executed[STUDY], cell.id)
    for claim in results["claims"]:
        if claim["paper"] is not None:  # the abstract's two numbers, 8.9 and 13.4, beside ours
            row = re.search(re.escape(claim["statement"][:40]) + r".*?</tr>", html, re.DOTALL).group(0)
            cells = re.findall(r"<td>([^<]*)</td>", row)
            assert f"{claim['paper']:g}" in cells and claim["verdict"] in cells
    assert {c["paper"] for c in results["claims"]} == {None, 8.9, 13.4}
    claims = _text(executed[STUDY], next(c.id for c in executed[STUDY].cells if "claims_table(" in c.source))
    for claim in results["claims"]:
        assert f"| {claim['statement']} | {claim['target_sparsity']:g} | {claim['verdict']} |" in claims


@pytest.fixture(scope="module")
def joint_run(executed) -> tuple[str, str]:
    """(method, offline joint run folder) that notebook 05 printed."""
    printed = _text(executed[JOINT], next(c.id for c in executed[JOINT].cells if "joint run:" in c.source))
    return re.search(r"method (\S+),", printed).group(1), re.search(r"joint run: (\S+)", printed).group(1)


def test_the_joint_lessons_runs_are_the_studys_rows(joint_run, results):
    """05 and 06 share runs: the joint row of the study is the folder notebook 05 trained."""
    method, run_dir = joint_run
    target = results["config"]["target_sparsities"][0]
    row = next(r for r in results["rows"] if r["key"] == f"offline-joint-{method}-{target:g}-s0")
    assert row["run_dir"] == run_dir


def test_a_finished_study_is_loaded_not_rerun(home, results):
    study, ran = sl.load_or_run_study(sl.grid_config("tiny"), home / "outputs")
    assert not ran and study.rows == results["rows"] and study.out_dir == home / "outputs" / "study"


def test_the_gated_student_rebuilt_from_a_checkpoint_counts_as_materialised(home, joint_run, one_thread):
    method = joint_run[0]
    config = sl.grid_config("tiny", methods=[method])
    runs = GridRuns(config, device="cpu", progress=False)
    routes = sl.run_routes(runs, "offline", method, config.target_sparsities[0], 0)  # finished: loaded, no student
    assert routes.joint.student is None and "l0" in method.split("+")
    gated = sl.joint_gated_student(routes.joint, runs.ssl_teacher().encoder)
    assert round(float(expected_params(gated.encoder, deterministic=True))) == routes.joint.metrics["encoder_params"]
    assert any(isinstance(m, HardConcreteGate) for m in gated.encoder.modules()), "the rebuilt student is gated"


# ------------------------------------------------------------------ in JupyterLab
@pytest.fixture(scope="module")
def lab(executed, tmp_path_factory):
    """JupyterLab serving 05 as its headless run left it."""
    with jupyterlab(tmp_path_factory.mktemp("jupyterlab"), {JOINT: executed[JOINT]}, trusted=(JOINT,)) as served:
        yield served


@pytest.mark.browser
def test_the_joint_lesson_in_jupyterlab_draws_every_figure_and_heatmap_step_before_and_after_a_reload(
    executed, lab, browser
):
    check_executed_notebook(browser, lab, JOINT, executed[JOINT])


# ------------------------------------------------------------------ helpers, without notebooks
@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine: one torch thread is ~100x faster than contended threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_results(folder, profile):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"config": {"profile": profile}}))


def test_study_folder_never_takes_another_profiles_study(tmp_path):
    assert sl.study_folder("tiny", tmp_path) == tmp_path / "study"
    _write_results(tmp_path / "study", "default")
    assert sl.study_folder("default", tmp_path) == tmp_path / "study"
    assert sl.study_folder("tiny", tmp_path) == tmp_path / "study-tiny"


def test_grid_config_budgets():
    smoke = sl.grid_config("tiny")
    n = get_profile("tiny").lesson_grid_smoke["steps"]
    assert smoke.teacher_steps is None, "the smoke grid keeps the profile's teacher (the one of notebooks 01-04)"
    assert (smoke.compress_steps, smoke.finetune_steps, smoke.recovery_steps) == (n, n, n // 2)
    assert smoke.methods == list(get_profile("tiny").lesson_grid_smoke["methods"]) and smoke.target_sparsities == [0.25]
    cli = sl.grid_config("tiny", steps=6, methods=["kd+l0"], target_sparsity=0.3)  # python -m kdlab study --steps 6
    assert (cli.teacher_steps, cli.compress_steps, cli.finetune_steps, cli.recovery_steps) == (6, 6, 6, 3)
    assert cli.methods == ["kd+l0"] and cli.target_sparsities == [0.3] and cli.latency_seconds == 10.0
    default = sl.grid_config("default")  # the study's own default grid, budgets and methods (make study)
    assert default == StudyConfig("default")
    assert (
        default.recovery_steps == get_profile("default").study_budgets["recovery_steps"]
        and "kd+lrf+l0" not in default.methods
    )
    assert default.finetune_steps is None  # every student gets the profile's student ASR schedule


def _study(seeds, targets, held, outside, kd_worse) -> StudyResults:
    claims = [
        {
            "id": f"claim{i}",
            "seeds": seeds,
            "details": {"reason": "rows missing"} if h is None else {},
            "held_in_seeds": {True: seeds, False: 0, None: 0}[h],
        }
        for i, h in enumerate(held)
    ]
    checks = {"budget": {"failures": [{"key": k} for k in outside]}, "kd_baseline_separated": {"held": kd_worse}}
    return StudyResults(None, StudyConfig("tiny", seeds=seeds, target_sparsities=targets), [], [], claims, checks)


def test_next_steps_follow_what_the_study_lacks():
    lacking = sl.next_steps(_study(1, [0.25], [True, None], ["offline-joint-l0-0.25-s0"], False))
    text = "\n".join(lacking)
    assert "--seeds 3" in text and "claim1" in text and "offline-joint-l0-0.25-s0" in text
    assert "--target-sparsity 0.35 0.45" in text and "--target-sparsity 0.15 0.25 0.35" in text
    assert sl.next_steps(_study(3, [0.3, 0.5], [True, False], [], True)) == []
    unstable = _study(3, [0.3, 0.5], [True], [], True)
    unstable.claims[0]["held_in_seeds"] = 2
    steps = sl.next_steps(unstable)
    assert len(steps) == 1 and "claim0" in steps[0] and "--seeds 6" in steps[0]


def test_next_steps_ask_for_longer_fine_tunes_when_the_kd_baseline_is_on_the_blank_plateau():
    def study(kd_wer):
        result = _study(3, [0.3, 0.5], [True], [], True)
        result.config = StudyConfig("default", seeds=3, target_sparsities=[0.3, 0.5])
        result.summary = [
            {"mode": "offline", "route": "sequential", "method": "kd", "target_sparsity": 0.5, "test_wer": kd_wer},
            {"mode": "offline", "route": "joint", "method": "lrf", "target_sparsity": 0.5, "test_wer": 0.95},
        ]  # a joint row on the plateau is not the baseline's fine-tune
        return result

    assert sl.next_steps(study(sl.PLATEAU_WER - 0.01)) == []
    (step,) = sl.next_steps(study(0.92))
    ctc, rnnt = get_profile("default").student_ctc_steps, get_profile("default").student_rnnt_steps
    assert "offline sequential 92 % at t = 0.5" in step and f"({ctc} CTC + {rnnt} RNN-T steps)" in step
    assert f"--profile default --ctc-warmup-steps {2 * ctc} --finetune-steps {4 * rnnt}`" in step
