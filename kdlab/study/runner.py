"""Run the study grid row by row and write its outputs.

    results = run_study(StudyConfig("default", seeds=3))     # outputs/study/
    results.summary, results.claims, results.checks

With ``workers`` > 1 the recipe runs are first trained side by side in that many processes
(``parallel.train_runs``, one torch thread each); the loop below then finds them complete.
For each row of ``plan_rows`` (printed as it finishes: ``[i/n] key: trained|reused|cached ...``)
the recipe runs or is reused (``recipes.GridRuns``), the final model is measured
(``recipes.measure_model``) and the row is stored in ``<out>/rows/<key>.json``. A re-run skips a
row whose stored record names the same run folder, that folder is complete and the measurement
settings are unchanged ("cached": nothing trained, loaded or measured).

Outputs in ``out_dir`` (default ``outputs/study``): ``results.json`` (config, rows, summary,
claims, checks; strict JSON: a NaN or infinity is an error), ``results.csv`` (the rows, one per
model and seed) and ``results.md`` (summary table, claims, checks). Its ``figures.html`` is drawn
a layer up, by ``report.study_figures_page.write_study_figures`` (``kdlab study`` calls both).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlab.deploy.encoder_runtime import encoder_call
from kdlab.study.checks import run_checks
from kdlab.study.claims import evaluate_claims
from kdlab.study.config import StudyConfig
from kdlab.study.parallel import train_runs
from kdlab.study.plan import RowSpec, plan_rows
from kdlab.study.recipes import GridRuns, latency_inputs, measure_model
from kdlab.study.report import render_markdown
from kdlab.study.row_start import start_and_cost
from kdlab.study.table import add_rwer, budget_fields, held_out_fields, summarise, write_csv
from kdlab.train.recipes.runs import read_result

ROWS = "rows"


@dataclass
class StudyResults:
    """A finished study: where its outputs are, its config, the per-seed ``rows`` (with RWER),
    the seed ``summary``, the ``claims`` and the ``checks``."""

    out_dir: Path
    config: StudyConfig
    rows: list[dict]
    summary: list[dict]
    claims: list[dict]
    checks: dict


def default_out_dir() -> Path:
    from kdlab.paths import outputs_dir

    return outputs_dir() / "study"


def _measure_settings(config: StudyConfig) -> dict:
    return {
        "latency_seconds": config.latency_seconds,
        "latency_min_time": config.latency_min_time,
        "latency_min_runs": config.latency_min_runs,
        "latency_runtime": config.latency_runtime,
    }


class TeacherCalls:
    """The teacher encoder's latency call per mode, built once (exported into ``folder`` for ONNX Runtime)."""

    def __init__(self, runs: GridRuns, folder: Path) -> None:
        self.runs, self.folder, self._calls = runs, folder, {}

    def __call__(self, mode: str) -> Callable[[], object]:
        if mode not in self._calls:
            c = self.runs.config
            teacher = self.runs.teacher(mode).model
            self._calls[mode] = encoder_call(
                teacher.encoder, *latency_inputs(teacher, c.latency_seconds), c.latency_runtime, self.folder / mode
            )
        return self._calls[mode]


def _row(spec: RowSpec, runs: GridRuns, rows_dir: Path, teacher_calls: TeacherCalls) -> tuple[dict, str]:
    """(the row of ``spec``, how it was obtained: "cached", "reused" or "trained")."""
    run_dir = runs.run_dir(spec)
    record = rows_dir / f"{spec.key}.json"
    settings = _measure_settings(runs.config)
    if record.is_file() and read_result(run_dir) is not None:
        stored = json.loads(record.read_text())
        if stored["row"]["run_dir"] == str(run_dir) and stored["measure"] == settings:
            return stored["row"], "cached"
    status = "reused" if read_result(run_dir) is not None else "trained"
    metrics, model = runs.run(spec)
    c = runs.config
    teacher = runs.teacher(spec.mode).encoder
    measured = measure_model(
        model,
        teacher,
        teacher_calls(spec.mode),
        c.latency_seconds,
        c.latency_min_time,
        c.latency_min_runs,
        c.latency_runtime,
    )
    if measured["encoder_params"] != metrics["encoder_params"]:
        raise RuntimeError(
            f"{spec.key}: the loaded encoder has {measured['encoder_params']} parameters, its run "
            f"{run_dir} reports {metrics['encoder_params']}; the run folder is inconsistent"
        )
    teacher_params = teacher.num_parameters()
    row = {
        "key": spec.key,
        **spec.to_dict(),
        **measured,
        "teacher_encoder_params": teacher_params,
        **budget_fields(measured["encoder_params"], teacher_params, spec.target_sparsity),
        "dev_wer": metrics["dev"]["wer"],
        "test_wer": metrics["test"]["wer"],
        "dev_cer": metrics["dev"]["cer"],
        "test_cer": metrics["test"]["cer"],
        **held_out_fields(metrics),
        "train_seconds": metrics["wall_seconds"],
        **start_and_cost(metrics),
        "run_dir": str(run_dir),
    }
    record.write_text(json.dumps({"row": row, "measure": settings}, indent=1, allow_nan=False))
    return row, status


def run_study(
    config: StudyConfig,
    out_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    log: Callable[[str], None] = print,
    workers: int = 1,
    gpus_per_run: int = 1,
) -> StudyResults:
    """Run (or reuse) every row of ``config``'s grid and write the outputs (module docstring).
    ``progress``: the recipes' progress bars (in this process); ``log``: where the per-row lines
    go; ``workers``: processes that train the runs side by side first (1: train in this process);
    ``gpus_per_run``: data-parallel processes of each run (``kdlab.study.parallel.run_task``)."""
    for name, value in (("workers", workers), ("gpus_per_run", gpus_per_run)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (1 trains in this process), got {value!r}")
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    (out / ROWS).mkdir(parents=True, exist_ok=True)
    runs = GridRuns(config, device, progress)
    plan = plan_rows(config)
    if workers > 1 or gpus_per_run > 1:
        start = time.perf_counter()
        log(f"training the grid's runs in {workers} worker(s), {gpus_per_run} process(es) per run")
        train_runs(config, plan, workers, device=device, log=log, processes_per_run=gpus_per_run)
        log(f"all runs trained in {time.perf_counter() - start:.0f} s; measuring the rows")
    rows = []
    with tempfile.TemporaryDirectory() as exports:
        teacher_calls = TeacherCalls(runs, Path(exports))
        for i, spec in enumerate(plan, 1):
            start = time.perf_counter()
            row, status = _row(spec, runs, out / ROWS, teacher_calls)
            rows.append(row)
            budget = {None: "", True: ", within budget", False: ", OUTSIDE budget"}[row["within_budget"]]
            log(
                f"[{i}/{len(plan)}] {spec.key}: {status} in {time.perf_counter() - start:.1f} s; test WER "
                f"{row['test_wer']:.1%}, encoder {row['encoder_params']:,} params{budget}"
            )
    results = StudyResults(out, config, add_rwer(rows), [], [], {})
    results.summary, results.claims, results.checks = (
        summarise(results.rows),
        evaluate_claims(results.rows),
        run_checks(results.rows),
    )
    write_outputs(results)
    return results


def write_outputs(results: StudyResults) -> None:
    """``results.json``, ``results.csv`` and ``results.md`` in ``results.out_dir``."""
    out, config = results.out_dir, results.config.to_dict()
    data = {
        "config": config,
        "rows": results.rows,
        "summary": results.summary,
        "claims": results.claims,
        "checks": results.checks,
    }
    (out / "results.json").write_text(json.dumps(data, indent=1, allow_nan=False))
    write_csv(results.rows, out / "results.csv")
    train_seconds = sum(r["train_seconds"] for r in results.rows)
    (out / "results.md").write_text(
        render_markdown(config, results.summary, results.claims, results.checks, train_seconds)
    )


def load_study(out_dir: str | Path | None = None) -> StudyResults:
    """The outputs of a finished study (``results.json``), e.g. for a notebook."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `python -m kdlab study` (or run_study()) first")
    data = json.loads(path.read_text())
    return StudyResults(
        out, StudyConfig.from_dict(data["config"]), data["rows"], data["summary"], data["claims"], data["checks"]
    )
