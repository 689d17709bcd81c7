"""Orchestration for the compression lessons (notebooks 02–04): short runs, shared measurements.

The notebooks stay thin: they call these helpers and the library, and show what comes back.

* ``lesson_config(profile, method, ...)``: a ``CompressConfig`` with the lesson's short budget
  (``lesson_budget``: few steps and small batches, so each notebook runs in minutes on 2 CPU
  cores; or the command line's config when ``steps`` is given) and the profile's target
  sparsity (``lesson_target``: the study's, ``RecipeProfile.target_sparsity``). Runs go to the usual cached folders
  (``compress_profile``), so a rerun or another notebook reuses them.
* ``teacher_agreement(encoder, teacher, batches)``: how close a student's output is to the SSL
  teacher's on dev batches, through the teacher's BEST-RQ prediction head (code agreement,
  output KL) and on the last hidden state (L1 + (1 − cos)).
* ``run_output_kd(config, teacher, temperature)``: distil a dense student with the output KL
  only, on the BEST-RQ head's distribution over codes (the recipes offer layer KD; this is the
  lesson's comparison), cached like the recipes' runs.
* ``gated_student(result, teacher_encoder)``: the gated student of an L0 run (rebuilt from the
  run's checkpoint when the run was loaded from disk), for the sparsity panel.
* ``students_table``, ``factorisation_table``: plain tables for the notebooks.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdlab.compress.factorise import FactorisationReport
from kdlab.compress.kd_losses import length_mask, output_kl
from kdlab.compress.materialise import load_compressed, save_compressed
from kdlab.data.batching import Batch
from kdlab.models.conformer import ConformerEncoder
from kdlab.train.checkpoint import load_checkpoint
from kdlab.train.history import History
from kdlab.train.recipes.compress import COMPRESSED, CompressResult, measured_result
from kdlab.train.recipes.compress_config import CompressConfig, DenseStudent
from kdlab.train.recipes.compress_student import build_student
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.pretrain import PretrainResult, corpus_folder
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import config_digest, has_checkpoint, read_result, write_result
from kdlab.train.trainer import Trainer, TrainerConfig, resolve_device


@dataclass(frozen=True)
class LessonBudget:
    """Steps per compression run, padded frames per training batch, seconds of audio of the
    latency measurement, and dev utterances used for the comparisons."""

    steps: int
    frames_per_batch: int
    latency_seconds: float
    eval_utterances: int


def lesson_budget(profile: str) -> LessonBudget:
    """The lesson budget of a recipe profile (its ``lesson_*`` fields; ValueError names the known
    profiles)."""
    p = get_profile(profile)
    return LessonBudget(p.lesson_steps, p.lesson_frames_per_batch, p.lesson_latency_seconds, p.lesson_eval_utterances)


def lesson_target(profile: str, target_sparsity: float | None = None) -> float:
    """``target_sparsity``, or the profile's target (``RecipeProfile.target_sparsity``) when it is None."""
    if target_sparsity is not None:
        return float(target_sparsity)
    return get_profile(profile).target_sparsity


def lesson_config(
    profile: str,
    method: str,
    target_sparsity: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    **overrides,
) -> CompressConfig:
    """The ``CompressConfig`` of a lesson run.

    ``steps`` None: the lesson budget (``lesson_budget``: few steps, small batches, a short
    latency measurement). ``steps`` given: exactly ``CompressConfig.for_profile(profile, method,
    target, seed, steps, **overrides)``, the config ``python -m kdlab compress --steps S`` builds,
    so a run made on the command line is reused by the notebook (and the other way round).
    """
    target = lesson_target(profile, target_sparsity)
    if steps is None:
        budget = lesson_budget(profile)
        overrides = {
            "frames_per_batch": budget.frames_per_batch,
            "latency_seconds": budget.latency_seconds,
            **overrides,
        }
        steps = budget.steps
    return CompressConfig.for_profile(profile, method, target, seed, steps, **overrides)


def dev_batches(teacher: PretrainResult, utterances: int) -> list[Batch]:
    """The first ``utterances`` dev utterances of the teacher's corpus, in fixed batches, with
    the teacher's CMVN (features ``(B, T, 80)``, ``feature_lengths (B,)``)."""
    pretrain = teacher.config
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        teacher.cmvn,
    )
    return list(data.eval_loader("dev", limit=utterances))


def head_logits(teacher: PretrainResult, encoder_out: torch.Tensor) -> torch.Tensor:
    """BEST-RQ head logits ``(B, T', K, C)`` (K codebooks of C codes) of encoder outputs ``(B, T', D)``."""
    c = teacher.model.config
    return teacher.model.head(encoder_out).unflatten(-1, (c.num_codebooks, c.codebook_size))


@torch.no_grad()
def teacher_agreement(
    encoder: ConformerEncoder, teacher: PretrainResult, batches: list[Batch], temperature: float = 1.0
) -> dict:
    """How closely ``encoder`` reproduces the SSL teacher on ``batches`` (both in eval mode).

    Over the valid output frames (and codebooks): ``code_agreement``, the fraction of frames
    where the teacher's BEST-RQ head picks the same code from the student's output as from the
    teacher's; ``output_kl``, T²·KL(teacher ‖ student) of the head's distributions at
    ``temperature``; ``last_layer_distance``, L1 + (1 − cos) between the two last hidden states.
    """
    student, reference = encoder.eval(), teacher.encoder.eval()
    agree = total = 0
    kl_sum = distance_sum = 0.0
    for batch in batches:
        out_t, lengths, _ = reference(batch.features, batch.feature_lengths)
        out_s, lengths_s, _ = student(batch.features, batch.feature_lengths)
        if not torch.equal(lengths, lengths_s):
            raise ValueError("student and teacher give different output lengths: they must share the front-end")
        mask = length_mask(lengths, out_t.shape[1])
        logits_t, logits_s = head_logits(teacher, out_t), head_logits(teacher, out_s)
        codes = mask[:, :, None].expand(logits_t.shape[:-1])
        valid = int(codes.sum())
        agree += int(((logits_t.argmax(-1) == logits_s.argmax(-1)) & codes).sum())
        kl_sum += float(output_kl(logits_s, logits_t, temperature, codes)) * valid
        frames = int(mask.sum())
        l1 = (out_s - out_t).abs().mean(-1)[mask].sum()
        cos = torch.nn.functional.cosine_similarity(out_s, out_t, dim=-1)[mask].sum()
        distance_sum += float(l1 + frames - cos)
        total += valid
    frames_total = total // teacher.model.config.num_codebooks
    return {
        "code_agreement": agree / total,
        "output_kl": kl_sum / total,
        "last_layer_distance": distance_sum / frames_total,
    }


class _OutputStudent(nn.Module):
    """What the trainer optimises in ``run_output_kd``: the student encoder only."""

    def __init__(self, student: ConformerEncoder) -> None:
        super().__init__()
        self.student = student


def output_kd_dir(config: CompressConfig, teacher: PretrainResult, temperature: float) -> Path:
    """``<teacher root>/lesson-output-kd-<target>-<hash of the config and the temperature>``."""
    digest = config_digest({**config.to_dict(), "output_temperature": temperature})
    return teacher.run_dir.parent / f"lesson-output-kd-{config.target_sparsity:g}-{digest}"


def run_output_kd(
    config: CompressConfig,
    teacher: PretrainResult,
    temperature: float = 2.0,
    device: str = "auto",
    run_dir: str | Path | None = None,
) -> CompressResult:
    """Distil the dense student of ``config`` (method "kd") with the output KL only.

    loss = T²·KL(softmax(h(e_t)/T) ‖ softmax(h(e_s)/T)) over the valid frames, where h is the
    teacher's frozen BEST-RQ head, e_t / e_s the teacher / student encoder outputs. Same student,
    schedule, batches and seed as the layer-KD run of ``config``; the result (materialised =
    the dense student, measured like the recipes' runs) is cached in ``output_kd_dir``.
    """
    if config.method != "kd":
        raise ValueError(
            f"run_output_kd distils a dense student: give a config with method 'kd', got {config.method!r}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    run_dir = Path(run_dir) if run_dir is not None else output_kd_dir(config, teacher, temperature)
    if read_result(run_dir) is not None:
        return _load_output_kd(run_dir, config)
    start = time.perf_counter()
    target = resolve_device(device)
    reference = copy.deepcopy(teacher.encoder).to(target).eval().requires_grad_(False)
    head = copy.deepcopy(teacher.model.head).to(target).eval().requires_grad_(False)
    codebooks, codes = teacher.model.config.num_codebooks, teacher.model.config.codebook_size
    built = build_student(config, reference)
    model = _OutputStudent(built.encoder)

    def step_fn(m: _OutputStudent, batch) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            out_t = reference(batch.features, batch.feature_lengths)[0]
        out_s, lengths, _ = m.student(batch.features, batch.feature_lengths)
        mask = length_mask(lengths, out_s.shape[1])[:, :, None].expand(-1, -1, codebooks)
        loss = output_kl(
            head(out_s).unflatten(-1, (codebooks, codes)),
            head(out_t).unflatten(-1, (codebooks, codes)),
            temperature,
            mask,
        )
        return loss, {"loss_output_kl": loss.detach()}

    pretrain = teacher.config
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        teacher.cmvn,
    )
    trainer = Trainer(
        model,
        TrainerConfig(
            max_steps=config.steps,
            lr=config.lr,
            weight_decay=0.0,
            warmup_steps=round(config.lr_warmup_fraction * config.steps),
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=config.grad_clip,
            log_every=config.log_every(),
            seed=config.seed,
            device=device,
            progress=False,
        ),
        step_fn,
        data.train_loader(config.frames_per_batch, config.seed),
        run_dir=run_dir,
        configs={"compress": config.to_dict(), "output_temperature": temperature},
    )
    if has_checkpoint(run_dir):
        trainer.load_checkpoint()
    trainer.fit()
    encoder = model.student.cpu().eval()
    save_compressed(encoder, run_dir / COMPRESSED)
    last = trainer.history.last("train") or {}
    write_result(
        run_dir,
        {
            "method": "output-kd",
            "temperature": temperature,
            "target_sparsity": config.target_sparsity,
            "steps": trainer.step,
            "wall_seconds": time.perf_counter() - start,
            "final_loss_output_kl": last.get("loss_output_kl"),
            **built.info,
            **measured_result(encoder, teacher.encoder, config.latency_seconds, config.seed),
        },
    )
    return _load_output_kd(run_dir, config, student=encoder)


def _load_output_kd(run_dir: Path, config: CompressConfig, student: ConformerEncoder | None = None) -> CompressResult:
    return CompressResult(
        run_dir,
        config,
        load_compressed(run_dir / COMPRESSED),
        student,
        History.load(run_dir / "history.json"),
        read_result(run_dir),
    )


def gated_student(result: CompressResult, teacher_encoder: ConformerEncoder) -> ConformerEncoder:
    """The gated (not materialised) student of a run with gates, eval mode, on the CPU: the
    result's own when it was just trained, else rebuilt and loaded from ``checkpoints/last.pt``."""
    if result.student is not None:
        return result.student
    checkpoint = result.run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(checkpoint)["model"]
    built = build_student(result.config, copy.deepcopy(teacher_encoder).cpu())
    prefix = "student."
    built.encoder.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return built.encoder.eval()


def students_table(teacher: ConformerEncoder, students: dict[str, DenseStudent]) -> pd.DataFrame:
    """One row per dense student config (and the teacher): depth, widths, parameters, sparsity."""
    rows = {"teacher": (teacher.config, teacher.num_parameters(), 0.0)}
    rows.update({name: (s.config, s.params, s.sparsity) for name, s in students.items()})
    return pd.DataFrame(
        {
            name: {
                "layers": c.num_layers,
                "d_model": c.d_model,
                "heads": c.num_heads,
                "FFN units": c.ffn_dim,
                "conv channels": c.conv_channels,
                "params": params,
                "sparsity": round(sparsity, 4),
            }
            for name, (c, params, sparsity) in rows.items()
        }
    ).T


def factorisation_table(report: FactorisationReport | dict) -> pd.DataFrame:
    """One row per candidate matrix of a factorisation report: shape, rank, break-even rank,
    parameters before / after, and why it stayed dense (empty when factorised)."""
    from kdlab.compress.lowrank import break_even_rank

    records = report.to_dict()["records"] if isinstance(report, FactorisationReport) else report["records"]
    rows = []
    for r in records:
        m, n = r["shape"]
        rows.append(
            {
                "matrix": r["name"],
                "shape": f"{m} × {n}",
                "rank": r["rank"] if not r["skipped"] else None,
                "break-even rank": break_even_rank(m, n),
                "params before": r["params_before"],
                "params after": r["params_after"],
                "kept dense because": r["skipped"] or "",
            }
        )
    return pd.DataFrame(rows).set_index("matrix")


def results_table(results: dict[str, CompressResult], agreement: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per run: sparsity reached, parameters, MAC and latency reductions, training time,
    and the ``teacher_agreement`` measurements when given."""
    rows = {}
    for name, result in results.items():
        m = result.metrics
        rows[name] = {
            "sparsity": m["achieved_sparsity"],
            "params": m["params"],
            "MAC reduction ×": m["mac_reduction"],
            "latency speed-up ×": m["latency_speedup"],
            "train s": m["wall_seconds"],
            **(agreement or {}).get(name, {}),
        }
    return pd.DataFrame(rows).T
