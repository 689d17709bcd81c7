"""The study grid (issue 5, acceptance 2): the whole grid end to end at the tiny profile — every
method, both routes, both modes, one seed, the lessons' smoke budgets (a few steps per recipe) —
through the CLI; its outputs' schema, finiteness and consistency with the reloaded models; the
claims and checks recomputed from the rows (and moved by changing a WER); caching of finished
rows; and the config and task logic (the claims, checks and tables on synthetic rows:
test_study_claims.py). The grid is the session's ``tiny_grid`` (tests/tiny_grid.py), whose runs
notebooks 05 and 06 reuse in test_notebooks_joint_study.py.
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch
from tiny_grid import run_study_cli

from kdlab.compress.factorise import factorise_encoder
from kdlab.compress.lowrank import LowRankLinear
from kdlab.compress.materialise import materialise
from kdlab.compress.param_count import expected_macs_per_second
from kdlab.eval.wer import relative_wer
from kdlab.lessons import study_grid as sl
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.report.offline_html import external_resources
from kdlab.study.checks import run_checks
from kdlab.study.claims import evaluate_claims
from kdlab.study.config import BUDGET_TOLERANCE, METHODS, MODES, ROUTES, StudyConfig
from kdlab.study.parallel import tasks
from kdlab.study.plan import RowSpec, plan_rows
from kdlab.study.recipes import GridRuns
from kdlab.study.table import COLUMNS, add_rwer
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import load_asr, read_result
from kdlab.train.recipes.sequential import SequentialConfig, encoder_in_mode, run_sequential
from kdlab.train.recipes.student_start import fresh_rnnt, weights_digest

torch.set_num_threads(1)
TARGET = 0.25


@pytest.fixture(scope="module")
def home(tiny_grid):
    """The KDLAB_HOME of the session's tiny grid (its runs/ and the shared tiny corpus), set for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDLAB_HOME", str(tiny_grid.home))
        yield tiny_grid.home


@pytest.fixture(scope="module")
def study(home, tiny_grid):
    """(output folder, stdout, results.json) of the tiny grid run from nothing through the CLI."""
    return tiny_grid.out, tiny_grid.stdout, tiny_grid.results


def _walk_numbers(value, path="results"):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


# ------------------------------------------------------------------ the grid end to end (acceptance 2)
def test_the_grid_has_every_method_route_and_mode_and_writes_all_outputs(study):
    out, stdout, data = study
    config = StudyConfig.from_dict(data["config"])
    assert config.target_sparsities == [TARGET] and config.seeds == 1
    assert [r["key"] for r in data["rows"]] == [s.key for s in plan_rows(config)]
    cells = {(r["mode"], r["route"], r["method"]) for r in data["rows"]}
    expected = {(m, route, method) for m in MODES for route in ROUTES for method in METHODS}
    expected |= {(m, "reference", ref) for m in MODES for ref in ("teacher", "scratch")}
    expected |= {(m, route, "kd") for m in MODES for route in ROUTES}  # a KD baseline per route
    assert cells == expected and len(data["rows"]) == len(expected)
    # two worker processes trained every run first (each once), the rows then found them complete
    started = [line.split()[-1] for line in stdout.splitlines() if line.strip().startswith("started ")]
    assert len(started) == len(set(started)) == len(tasks(plan_rows(config)))
    progress = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(expected) and all(": reused in " in line for line in progress)
    for name in ("results.json", "results.csv", "results.md", "figures.html"):
        assert (out / name).stat().st_size > 0, name
    for row in data["rows"]:
        assert set(COLUMNS) <= set(row), row["key"]
        for name in ("encoder_params", "params", "macs_per_second", "latency_ms", "dev_wer", "test_wer"):
            assert row[name] is not None, (row["key"], name)
    assert len(data["summary"]) == len(expected) and all(s["seeds"] == 1 for s in data["summary"])


def test_the_grid_is_the_lessons_smoke_grid_with_every_method(study):
    """Notebooks 05 and 06 at profile tiny train rows of this grid (``grid_config``), so they find them trained."""
    assert StudyConfig.from_dict(study[2]["config"]) == sl.grid_config("tiny", methods=list(METHODS))


def test_every_reported_number_is_finite(study):
    out, _, data = study
    numbers = list(_walk_numbers(data))
    assert len(numbers) > 300
    assert all(math.isfinite(v) for _, v in numbers), [p for p, v in numbers if not math.isfinite(v)]
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    text = {"key", "mode", "route", "method", "within_budget", "run_dir"}
    cells = [float(row[k]) for row in rows for k in COLUMNS if k not in text and row[k] != ""]
    assert len(cells) > 12 * len(rows) and all(math.isfinite(v) for v in cells)


def test_params_and_macs_of_each_row_equal_the_reloaded_model(study):
    _, _, data = study
    for row in data["rows"]:
        model, _ = load_asr(os.path.join(row["run_dir"], "asr.pt"))
        assert model.encoder.num_parameters() == row["encoder_params"], row["key"]
        assert sum(p.numel() for p in model.parameters()) == row["params"], row["key"]
        assert float(expected_macs_per_second(model.encoder, deterministic=True)) == row["macs_per_second"]
        assert model.encoder.config.streaming == (row["mode"] == "streaming"), row["key"]
        assert read_result(row["run_dir"])["test"]["wer"] == row["test_wer"], row["key"]


def test_sequential_rows_of_both_modes_share_one_compression_run(study):
    _, _, data = study
    for method in ("kd", *METHODS):
        offline, streaming = (
            read_result(r["run_dir"])
            for mode in MODES
            for r in data["rows"]
            if (r["mode"], r["route"], r["method"]) == (mode, "sequential", method)
        )
        assert offline["compress_run_dir"] == streaming["compress_run_dir"]
        compressed = read_result(offline["compress_run_dir"])
        assert offline["encoder_params"] == streaming["encoder_params"] == compressed["params"]
        assert (offline["route"], offline["method"], offline["mode"]) == ("sequential", method, "offline")
        assert not offline["conv_made_causal"] and streaming["conv_made_causal"]


def test_every_student_row_had_the_same_start_and_the_same_asr_schedule(study):
    """Acceptance 1 of issue 14 (the start and the budget): every student row of both routes, the KD
    baselines included, started from the SSL encoder's weights with the same fresh predictor and
    joiner, and trained the same CTC and RNN-T steps on the same frames; rows carry route, mode
    and seed (so RWER can be taken per route and mode)."""
    _, _, data = study
    config = StudyConfig.from_dict(data["config"])
    runs = GridRuns(config, device="cpu")
    ssl = runs.ssl_teacher().encoder  # trained by the grid, reloaded here
    joint = runs.joint_config(RowSpec("offline", "joint", "kd+l0", TARGET, 0))
    fresh = fresh_rnnt(ConformerEncoder(ssl.config), joint.rnnt, seed=0)
    teacher = runs.teacher("offline").model
    students = [r for r in data["rows"] if r["route"] in ROUTES]
    assert {(r["route"], r["method"]) for r in students} >= {(route, "kd") for route in ROUTES}
    assert len(students) == 2 * len(MODES) * (1 + len(METHODS))
    for row in students:
        assert {"route", "mode", "seed"} <= set(row) and row["seed"] == 0, row["key"]
        assert row["ssl_encoder_digest"] == weights_digest(ssl), row["key"]
        assert row["fresh_heads_digest"] == weights_digest(fresh.predictor, fresh.joiner), row["key"]
        assert row["kd_source"] == ("ssl" if row["route"] == "joint" and "kd" in row["method"].split("+") else None)
    assert weights_digest(fresh.predictor, fresh.joiner) != weights_digest(teacher.predictor, teacher.joiner)
    schedules = {(r["ctc_steps"], r["ctc_frames"], r["rnnt_steps"], r["rnnt_frames"]) for r in students}
    scratch = {
        (r["ctc_steps"], r["ctc_frames"], r["rnnt_steps"], r["rnnt_frames"])
        for r in data["rows"]
        if r["method"] == "scratch"
    }
    assert schedules == scratch and len(schedules) == 1  # the from-scratch reference too
    ((ctc_steps, ctc_frames, rnnt_steps, rnnt_frames),) = schedules
    assert (ctc_steps, rnnt_steps) == (get_profile("tiny").student_ctc_steps, config.finetune_steps)
    assert ctc_frames > 0 and rnnt_frames > 0
    for row in students:  # what each row was paid: the sequential route's compression on top of the schedule
        paid = row["compress_cpu_seconds"]
        assert (paid > 0) == (row["route"] == "sequential") and row["train_cpu_seconds"] > paid, row["key"]


def test_rwer_and_budget_flags_recompute_from_the_csv(study):
    out, _, _ = study
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    baselines = {(r["route"], r["mode"], r["target_sparsity"], r["seed"]): r for r in rows if r["method"] == "kd"}
    checked = 0
    for row in rows:
        if row["method"] == "teacher":
            assert row["rwer"] == "" and row["within_budget"] == ""
            continue
        sparsity = 1 - int(row["encoder_params"]) / int(row["teacher_encoder_params"])
        within = abs(sparsity - float(row["target_sparsity"])) <= BUDGET_TOLERANCE
        assert row["within_budget"] == str(within), row["key"]
        base = baselines.get((row["route"], row["mode"], row["target_sparsity"], row["seed"]))
        if base is None:  # the references belong to no route; a route without a KD baseline: no RWER
            assert row["rwer"] == "", row["key"]
            continue
        assert float(row["rwer"]) == pytest.approx(relative_wer(float(base["test_wer"]), float(row["test_wer"])))
        checked += 1
    routes_with_baseline = {r["route"] for r in rows if r["method"] == "kd"}
    assert routes_with_baseline == set(ROUTES)  # each route has its own KD baseline
    assert checked == sum(row["route"] in routes_with_baseline for row in rows)


def test_claims_and_checks_are_computed_from_the_rows_and_flip_with_a_wer(study):
    out, _, data = study
    rows = data["rows"]
    assert evaluate_claims(rows) == data["claims"]
    assert run_checks(rows) == data["checks"]
    markdown = (out / "results.md").read_text()
    for claim in data["claims"]:
        assert f"| {claim['statement']} | {TARGET:g} | {claim['verdict']} |" in markdown
        # a few training steps per recipe leave every model on the blank plateau: nothing can be decided
        assert claim["verdict"] == "undetermined" and "blank plateau" in claim["reason"], claim

    def with_wer(rows, mode, route, method, factor):
        base = next(r for r in rows if (r["mode"], r["route"], r["method"]) == (mode, route, "kd"))
        changed = [
            {**r, "test_wer": base["test_wer"] * factor}
            if (r["mode"], r["route"], r["method"]) == (mode, route, method)
            else r
            for r in rows
        ]
        return add_rwer(changed)

    better = with_wer(rows, "offline", "sequential", "kd+l0", 0.5)
    claims = {c["id"]: c for c in evaluate_claims(better)}
    assert claims["l0_kd_best_offline"]["value"] == pytest.approx(50.0)
    assert claims["l0_kd_best_offline"]["effect"] > 0 and claims["l0_kd_best_offline"]["held_in_seeds"] == 1
    worse = with_wer(better, "offline", "sequential", "lrf", 0.4)  # now plain LRF beats kd+l0 offline
    assert {c["id"]: c for c in evaluate_claims(worse)}["l0_kd_best_offline"]["held_in_seeds"] == 0


def test_a_rerun_skips_every_finished_row_and_writes_the_same_rows(study):
    out, _, data = study
    stdout = run_study_cli(out)
    progress = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(data["rows"]) and all(": cached in " in line for line in progress)
    assert json.loads((out / "results.json").read_text())["rows"] == data["rows"]


def test_the_figures_page_embeds_plotly_once_and_loads_nothing_from_a_network(study):
    out, _, _ = study
    page = (out / "figures.html").read_text()
    assert external_resources(page) == []
    assert page.count("* plotly.js v") == 1
    assert page.count("Plotly.newPlot") == len(MODES) + 1  # a Pareto figure per mode + the RWER bars


def test_a_sequential_fine_tune_refuses_a_compression_run_of_another_profile(study):
    _, _, data = study
    sequential = next(r for r in data["rows"] if r["route"] == "sequential")
    compress_dir = read_result(sequential["run_dir"])["compress_run_dir"]
    with pytest.raises(ValueError, match="profile 'tiny'"):
        run_sequential(SequentialConfig.for_profile("default", compress_dir, steps=1), device="cpu", progress=False)


# ------------------------------------------------------------------ grid logic (claims etc.: test_study_claims.py)
def test_a_failing_worker_task_is_named_in_the_error(study):
    from kdlab.study.parallel import train_runs
    from kdlab.study.plan import RowSpec

    config = StudyConfig.from_dict(study[2]["config"])  # its teacher is trained: only the bad row runs
    bad = RowSpec("offline", "joint", "pruning-by-hand", TARGET, 0)
    lines = []
    with pytest.raises(RuntimeError, match=r"study task row/offline-joint-pruning-by-hand-0.25-s0 failed.*method"):
        train_runs(config, [bad], workers=2, device="cpu", log=lines.append)
    assert any("pruning-by-hand" in line and "failed" in line for line in lines)


def test_gpus_per_run_trains_a_task_under_torchrun(study):
    """`study --gpus-per-run 2` on a CPU: the task's 2 ranks train it together (the run records 2
    processes) and rank 0's run folder is the one the grid reuses."""
    from kdlab.study.parallel import PRETRAIN, Task, run_task
    from kdlab.study.recipes import GridRuns

    config = StudyConfig.from_dict({**study[2]["config"], "teacher_seed": 7})  # a pre-training not yet run
    run_task(config.to_dict(), Task(PRETRAIN, (), PRETRAIN), threads=1, device="cpu", processes_per_run=2)
    reused = GridRuns(config, "cpu").ssl_teacher()
    assert reused.metrics["processes"] == 2 and reused.metrics["steps"] == get_profile(config.profile).pretrain_steps


def test_worker_tasks_run_each_recipe_once_after_what_it_needs():
    config = StudyConfig("default", seeds=2)
    assert config.compress_steps is not None and config.recovery_steps is not None  # the grid's budgets
    graph = tasks(plan_rows(config))
    names = [t.name for t in graph]
    assert len(names) == len(set(names))
    position = {name: i for i, name in enumerate(names)}
    for task in graph:
        assert all(position[need] < position[task.name] for need in task.after), task
    after = {t.name: t.after for t in graph}
    assert after["teacher/streaming"] == after["teacher/offline"] == ("pretrain",)  # side by side
    # a streaming teacher that starts from the offline one (the default profile's) waits for it, in
    # any plan that has it, a streaming-only one too
    assert get_profile("default").streaming_teacher_init == "offline"
    for modes in (["offline", "streaming"], ["streaming"]):
        plan = plan_rows(StudyConfig("default", modes=modes))
        chained = {t.name: t.after for t in tasks(plan, streaming_teacher_init="offline")}
        assert chained["teacher/streaming"] == ("pretrain", "teacher/offline")
        assert chained["teacher/offline"] == ("pretrain",)
    sequential = [t for t in graph if t.row is not None and t.row.route == "sequential"]
    assert config.methods == ["lrf", "l0", "kd+lrf", "kd+l0"]  # the default grid: the methods of the claims
    assert {t.after for t in sequential} == {
        (f"compress/{m}/{config.target_sparsities[0]:g}/s{s}",) for m in ["kd", *config.methods] for s in (0, 1)
    }
    joint = [t for t in graph if t.row is not None and t.row.route == "joint"]
    assert joint and all(t.after == ("pretrain",) for t in joint)  # they start from the SSL encoder
    from_teacher = {t.name: t.after for t in tasks(plan_rows(config), joint_kd_source="finetuned")}
    for task in joint:  # distilling the fine-tuned teacher waits for it
        distils = "kd" in task.row.method.split("+")
        assert from_teacher[task.name] == (("pretrain", f"teacher/{task.row.mode}") if distils else ("pretrain",))
    # one compression run per (method, seed), shared by both modes; every row of the plan is a task
    assert sum(t.kind == "compress" for t in graph) == 2 * (1 + len(config.methods))
    rows = {t.row.key for t in graph if t.row is not None}
    teachers = {s.key for s in plan_rows(config) if s.method == "teacher"}
    assert rows | teachers == {s.key for s in plan_rows(config)}


def test_study_config_defaults_validation_and_plan_size():
    assert StudyConfig("tiny").target_sparsities == [0.25]
    assert StudyConfig("default").target_sparsities == [0.75]
    config = StudyConfig(
        "tiny", seeds=2, target_sparsities=[0.2, 0.3], methods=["kd+l0", "lrf"], modes=["streaming"], routes=["joint"]
    )
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # teacher + per seed and target: scratch, the sequential KD baseline, the joint KD baseline and methods
    assert len(plan_rows(config)) == 1 + 2 * 2 * (1 + 1 + 1 + 2)
    for kwargs, message in [
        ({"methods": ["kd"]}, "methods must be"),
        ({"modes": ["offline", "offline"]}, "twice"),
        ({"target_sparsities": [1.5]}, "target_sparsity must be in"),
        ({"seeds": 0}, "seeds must be"),
        ({"finetune_steps": 0}, "finetune_steps"),
        ({"joint_kd_source": "teacher"}, "joint_kd_source"),
        ({"latency_min_runs": 0}, "latency_min_runs"),
    ]:
        with pytest.raises(ValueError, match=message):
            StudyConfig("tiny", **kwargs)


def test_encoder_in_mode_keeps_the_weights_of_a_factorised_encoder_and_switches_the_conv_to_causal():
    torch.manual_seed(0)
    dense = ConformerEncoder(teacher_config("tiny", input_dim=20)).eval()
    factorise_encoder(dense, "energy", 0.5, None, seed=0)
    encoder = materialise(dense).eval()
    assert any(isinstance(m, LowRankLinear) for m in encoder.modules())
    features, lengths = torch.randn(2, 60, 20), torch.tensor([60, 48])
    streaming = encoder_in_mode(encoder, True, 4, -1)
    assert streaming.config.streaming and streaming.config.chunk_size == 4 and not streaming.training
    assert all(block.conv.causal for block in streaming.blocks)
    assert streaming.num_parameters() == encoder.num_parameters()
    assert not torch.allclose(streaming(features, lengths)[0], encoder(features, lengths)[0])
    back = encoder_in_mode(streaming, False, 16, -1)
    torch.testing.assert_close(back(features, lengths)[0], encoder(features, lengths)[0])


def test_the_index_section_and_the_readme_block_show_the_summary_rows(study, tmp_path):
    from kdlab.report.study_publish import README_END, README_START, study_index_section, update_readme
    from kdlab.study.runner import load_study

    out, _, results = study
    section = study_index_section(out.parent)
    tables = section.body_html.split("<table>")[1:]
    assert len(tables) == 3 and tables[0].count("<tr>") == 1 + len(results["summary"])
    first = results["summary"][0]
    assert f"<td>{first['test_wer'] * 100:,.1f}</td>" in tables[0]
    assert tables[1].count("<tr>") == 1 + len(results["claims"])
    assert all(f"<td>{claim['verdict']}</td>" in tables[1] for claim in results["claims"])
    assert tables[2].count("<tr>") == 1 + len(results["checks"])
    assert study_index_section(tmp_path) is None  # no study there

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    update_readme(readme, load_study(out), "make study")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    block = text.split(README_START)[1].split(README_END)[0]
    assert "`make study`" in block
    assert sum(line.startswith(("| offline", "| streaming")) for line in block.splitlines()) == len(results["summary"])
    assert all(f"| {claim['statement']} | {TARGET:g} | {claim['verdict']} |" in block for claim in results["claims"])
    assert "| validity check | held | measured |" in block
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers|block"):
        update_readme(readme, load_study(out))


def test_the_cli_budget_options_override_steps_and_appear_in_the_readme_command():
    import argparse

    from kdlab.commands import study as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--seeds",
            "3",
            "--steps",
            "5",
            "--finetune-steps",
            "240",
            "--ctc-warmup-steps",
            "400",
            "--target-sparsity",
            "0.5",
            "0.7",
            "--modes",
            "offline",
        ]
    )
    config = command.study_config(args)
    assert (config.finetune_steps, config.ctc_warmup_steps) == (240, 400)
    assert (config.compress_steps, config.recovery_steps) == (5, 2)  # --steps for the rest
    assert command.command_line(args) == (
        "python -m kdlab study --profile default --seeds 3 --target-sparsity 0.5 "
        "0.7 --modes offline --steps 5 --ctc-warmup-steps 400 --finetune-steps 240"
    )
    defaults = parser.parse_args([])
    assert command.study_config(defaults) == StudyConfig("default")  # the grid's budgets untouched
    latency = command.study_config(parser.parse_args(["--latency-runs", "3"]))
    assert (latency.latency_min_runs, latency.latency_min_time) == (3, StudyConfig("default").latency_min_time)
    assert command.command_line(defaults) == "python -m kdlab study --profile default --seeds 1"
