"""Orchestration for lessons 05 (joint pruning with RNN-T) and 06 (the study's results).

Both notebooks work on the rows of the study grid (``kdlab.study``), so a run made by one of
them, by ``python -m kdlab study`` or by ``make study`` is reused by the others:

* ``grid_config(profile, steps, methods)``: the ``StudyConfig`` of the lessons. ``steps`` None
  gives the profile's budgets (``make study``), except at the smoke profiles
  (``RecipeProfile.lesson_grid_smoke``; ``tiny``: a few steps per recipe, a short latency
  measurement, three methods); a number S gives exactly ``python -m kdlab study --steps S``
  (teacher fine-tune included).
* ``study_folder(profile)`` / ``load_or_run_study(config)``: the study outputs of a profile
  (``outputs/study``, or ``outputs/study-<profile>`` when ``outputs/study`` holds another
  profile's study, which is never overwritten), run first when missing.
* ``run_routes(runs, mode, method, target, seed)``: the joint run and the sequential route's
  compression + fine-tune of one row pair of the grid (``GridRuns``' configs and folders);
  ``students_table`` compares them with the teachers, ``teacher_data`` gives the teacher's corpus.
* ``next_steps(study)``: what a finished study's evidence lacks, and the command that adds it.
* ``joint_gated_student(result, ssl_encoder)``: the gated model at the end of joint training (rebuilt
  from the run's checkpoint when the run was loaded from disk).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from kdlab.compress.budget_calibration import shift_gates
from kdlab.models.conformer import ConformerEncoder
from kdlab.models.rnnt import RNNTModel
from kdlab.report.study_figures_page import write_study_figures
from kdlab.study import StudyConfig, StudyResults, load_study, run_study
from kdlab.study.checks import KD_MAX_TEACHER_RATIO, PLATEAU_WER, is_kd_baseline
from kdlab.study.config import BUDGET_TOLERANCE, uniform_budgets
from kdlab.study.plan import RowSpec
from kdlab.study.recipes import GridRuns
from kdlab.train.checkpoint import load_checkpoint
from kdlab.train.recipes.compress import CompressResult
from kdlab.train.recipes.compress_teacher import compress_profile
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.joint import JointResult, joint_profile
from kdlab.train.recipes.joint_model import build_joint_student
from kdlab.train.recipes.pretrain import corpus_folder
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.sequential import SequentialResult, run_sequential
from kdlab.train.recipes.student_schedule import student_finetune_config
from kdlab.train.recipes.teacher import TeacherBundle


def grid_config(
    profile: str, steps: int | None = None, methods=None, seeds: int = 1, target_sparsity: float | None = None
) -> StudyConfig:
    """The lessons' ``StudyConfig`` (module docstring); ``methods`` None: the profile's grid (at a
    smoke profile, its smoke methods); ``target_sparsity`` None: the profile's budget.

    A smoke profile (``RecipeProfile.lesson_grid_smoke`` not empty) with ``steps`` None gives every
    recipe its smoke steps (joint recovery: half), its methods and a short latency measurement; the
    teacher keeps the profile's budget, so it is the teacher notebooks 01–04 use."""
    smoke = get_profile(profile).lesson_grid_smoke if steps is None else None
    fields = {"seeds": seeds, "target_sparsities": None if target_sparsity is None else [target_sparsity]}
    if methods is None and smoke:
        methods = smoke["methods"]
    fields["methods"] = None if methods is None else list(methods)
    if smoke:
        n = smoke["steps"]
        fields.update(finetune_steps=n, compress_steps=n, recovery_steps=n // 2, **smoke["latency"])
    elif steps is not None:
        fields.update(uniform_budgets(steps))
    return StudyConfig(profile, **fields)


def _profile_of(folder: Path) -> str | None:
    path = folder / "results.json"
    return json.loads(path.read_text())["config"]["profile"] if path.is_file() else None


def study_folder(profile: str, outputs: str | Path | None = None) -> Path:
    """Where the study of ``profile`` is (or goes): ``<outputs>/study`` when it holds that profile's
    study or none at all, else ``<outputs>/study-<profile>`` (``outputs``: ``paths.outputs_dir()``)."""
    from kdlab.paths import outputs_dir

    outputs = Path(outputs) if outputs is not None else outputs_dir()
    main = outputs / "study"
    return main if _profile_of(main) in (None, profile) else outputs / f"study-{profile}"


def load_or_run_study(
    config: StudyConfig, outputs: str | Path | None = None, device: str = "auto", log: Callable[[str], None] = print
) -> tuple[StudyResults, bool]:
    """(the study of ``config.profile``, whether it was run here). Finished outputs of that profile
    are loaded as they are, whatever grid produced them; otherwise ``config`` runs (reusing every
    finished recipe run) into ``study_folder``, with its figures page, as ``kdlab study`` writes it."""
    folder = study_folder(config.profile, outputs)
    if _profile_of(folder) == config.profile:
        return load_study(folder), False
    results = run_study(config, folder, device=device, log=log)
    write_study_figures(results)
    return results, True


@dataclass
class Routes:
    """Both routes to one compressed ASR model: ``joint`` (pruned while training RNN-T), and the
    sequential ``compress`` run (the SSL encoder, task-agnostic) with its RNN-T ``sequential`` fine-tune."""

    joint: JointResult
    compress: CompressResult
    sequential: SequentialResult


def run_routes(runs: GridRuns, mode: str, method: str, target: float, seed: int) -> Routes:
    """Run (or reuse) the joint and the sequential row of (mode, method, target, seed) with the
    grid's configs and folders, so ``run_study`` reuses them (and the other way round)."""
    joint = RowSpec(mode, "joint", method, target, seed)
    sequential = RowSpec(mode, "sequential", method, target, seed)
    device, progress = runs.device, runs.progress
    return Routes(
        joint_profile(runs.joint_config(joint), runs.run_dir(joint), device=device, progress=progress),
        compress_profile(runs.compress_config(method, target, seed), device=device, progress=progress),
        run_sequential(runs.sequential_config(sequential), device=device, progress=progress),
    )


def students_table(teachers: dict[str, TeacherBundle], routes: dict[str, Routes]) -> pd.DataFrame:
    """One row per model (the teacher, the joint and the sequential student of each mode):
    encoder and whole-model parameters, sparsity vs that mode's teacher encoder, dev / test WER (%)."""
    rows = {}
    for mode, pair in routes.items():
        teacher = teachers[mode].metrics
        models = {"teacher": teacher, "joint": pair.joint.metrics, "sequential": pair.sequential.metrics}
        for route, m in models.items():
            rows[f"{mode} · {route}"] = {
                "mode": mode,
                "route": route,
                "encoder params": m["encoder_params"],
                "params": m["params"],
                "sparsity": 1.0 - m["encoder_params"] / teacher["encoder_params"],
                "dev WER %": 100 * m["dev"]["wer"],
                "test WER %": 100 * m["test"]["wer"],
            }
    return pd.DataFrame(rows).T


def teacher_data(teacher: TeacherBundle) -> SpeechData:
    """The teacher's corpus with its CMVN (the features every joint run trains and tests on)."""
    finetune = teacher.finetune.config
    return SpeechData.from_corpus(
        corpus_folder(finetune.profile, finetune.corpus_seed, finetune.corpus_dir),
        finetune.cmvn_utterances,
        teacher.cmvn,
    )


def _targets(values: list[float]) -> str:
    """Distinct valid target sparsities (in (0, 0.95]), rounded to 2 decimals, as CLI arguments."""
    return " ".join(f"{t:g}" for t in dict.fromkeys(round(min(v, 0.95), 2) for v in values if v > 0))


def next_steps(study: StudyResults) -> list[str]:
    """Markdown bullets computed from ``study``: seeds, unstable or unevaluated claims, models off
    their budget, a KD baseline still on the blank plateau or no worse than the teacher, a single
    budget; each with a command."""
    c, claims, checks = study.config, study.claims, study.checks
    command = f"python -m kdlab study --profile {c.profile}"
    steps = []
    if c.seeds < 3:
        steps.append(
            f"**More seeds**: every claim rests on {c.seeds} seed(s); `{command} --seeds 3` reports "
            "mean ± std and in how many seeds each claim holds."
        )
    unstable = sorted({cl["id"] for cl in claims if cl["seeds"] > 1 and 0 < cl["held_in_seeds"] < cl["seeds"]})
    if unstable:
        steps.append(
            f"**Unstable claims** ({', '.join(unstable)}): they hold in some seeds only; add seeds "
            f"(`--seeds {2 * c.seeds}`) before reading them either way."
        )
    missing = sorted({cl["id"] for cl in claims if "reason" in cl["details"]})
    if missing:
        steps.append(
            f"**Complete the grid**: not evaluated ({', '.join(missing)}) because rows are missing; run "
            f"every method, mode and route (`{command}` without `--methods` / `--modes` / `--routes`)."
        )
    outside = checks["budget"]["failures"]
    if outside:
        keys = ", ".join(o["key"] for o in outside[:4]) + (" …" if len(outside) > 4 else "")
        steps.append(
            f"**Reach the budget**: {len(outside)} model(s) miss their target sparsity by more than "
            f"±{BUDGET_TOLERANCE:g} ({keys}); train longer (`--steps`) or raise the multipliers' "
            "learning rate (`lagrangian_lr` of `CompressConfig` / `JointConfig`), and compare only then."
        )
    stuck = [
        r for r in study.summary if is_kd_baseline(r) and r["test_wer"] is not None and r["test_wer"] > PLATEAU_WER
    ]
    if stuck:
        wers = ", ".join(
            f"{r['mode']} {r['route']} {100 * r['test_wer']:.0f} % at t = {r['target_sparsity']:g}" for r in stuck
        )
        schedule = student_finetune_config(c.profile, ctc_steps=c.ctc_warmup_steps, rnnt_steps=c.finetune_steps)
        ctc, rnnt = schedule.ctc_warmup.steps, schedule.trainer.max_steps
        steps.append(
            f"**Fine-tunes that have hardly started**: the KD baseline's test WER is {wers}; its RNN-T "
            f"fine-tune ({ctc} CTC + {rnnt} RNN-T steps) has barely left the blank output, so RWERs "
            "against it measure training length more than the methods. Fine-tune longer: "
            f"`{command} --ctc-warmup-steps {2 * ctc} --finetune-steps {4 * rnnt}` (or more)."
        )
    top = max(c.target_sparsities)
    if checks["kd_baseline_separated"]["held"] is False:
        steps.append(
            f"**A budget that separates methods**: a KD baseline is not clearly worse than the teacher "
            f"(no gap for a method to close) or has more than {KD_MAX_TEACHER_RATIO:g} × its WER (the "
            "students are undertrained); train longer (`--steps`) or compress harder "
            f"(`{command} --target-sparsity {_targets([top + 0.1, top + 0.2])}`)."
        )
    if len(c.target_sparsities) == 1:
        steps.append(
            f"**Other budgets**: one target ({top:g}); `{command} --target-sparsity "
            f"{_targets([0.6 * top, top, 1.4 * top])}` shows whether the ranking of the methods holds as "
            "the model shrinks."
        )
    return steps


def joint_gated_student(result: JointResult, ssl_encoder: ConformerEncoder) -> RNNTModel:
    """The gated / factorised RNN-T model at the end of the joint phase, as it was materialised
    (eval, CPU): the result's own when it was just trained, else rebuilt from
    ``checkpoints/last.pt`` with the run's budget calibration applied to its gates. The student is
    rebuilt from ``ssl_encoder``, the SSL encoder it started from (a factorisation's ranks depend
    on those weights; the checkpoint then replaces them)."""
    if result.student is not None:
        return result.student.eval()
    student, gates, _ = build_joint_student(result.config, ssl_encoder.cpu())
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    if "ctc_head.weight" in state:  # the CTC head kept beside the transducer
        student.ctc_head = torch.nn.Linear(*reversed(state["ctc_head.weight"].shape))
    student.load_state_dict(state)
    calibration = result.metrics.get("budget_calibration")
    if calibration:
        shift_gates(gates, calibration["shift"])
    return student.asr.eval()
