"""Run folders of the recipes: names from a config hash, a completion marker, the final result,
the one loader of a completed folder (``load_run``) and of its ``asr.pt`` (``load_asr``).

A run folder holds ``config.json`` and ``history.json`` (written by the trainer),
``checkpoints/last.pt`` (resume), the final weights and ``result.json``; ``result.json`` is
written last, so its presence means the run is complete and can be reused as is.

``asr.pt`` (an RNN-T model and its tokenizer) comes in two formats, both read by ``load_asr``: a
dense encoder's config (teacher fine-tunes, ``finetune.run_finetune``) or, tagged ``ASR_FORMAT``, a
materialised encoder's ``CompressedEncoderSpec`` (``save_student_asr``: sequential and joint runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TypeVar

import torch

from kdlab.compress.materialise import CompressedEncoderSpec, build_encoder, encoder_spec
from kdlab.config import JsonConfig
from kdlab.data.tokenizer import Tokenizer, tokenizer_from_dict
from kdlab.models.conformer import ConformerConfig, ConformerEncoder
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train import distributed
from kdlab.train.recipes.corpus_choice import corpus_content_digest
from kdlab.train.trainer import RESUMABLE_CHANGES

RESULT = "result.json"
ASR_FORMAT = "kdlab-compressed-asr"
C = TypeVar("C", bound=JsonConfig)
#: Config keys that do not change a run's numbers (left out of its hash).
NOT_HASHED = {"device", "progress", "checkpoint_seconds"}
#: Keys added after runs were cached, left out of the hash at these values so those runs keep their names.
HASHED_UNLESS = {
    "corpus_digest": None,
    "tokenizer": "char",
    "teacher_corpus_dir": None,
    "teacher_corpus_digest": None,
    "precision": "fp32",
    "prune_range": 0,
    "simple_loss_scale": 0.5,
    "offline_run_dir": None,
}


def hashed_fields(config):
    """What of a JSON-like config decides its numbers: without ``NOT_HASHED`` keys (any depth), the
    ``HASHED_UNLESS`` keys at their old value, and ``[teacher_]corpus_dir`` where its ``..._digest``
    stands for it (the corpus content, wherever the folder lives)."""
    if isinstance(config, list):
        return [hashed_fields(v) for v in config]
    if not isinstance(config, dict):
        return config
    config = dict(config)
    for prefix in ("", "teacher_"):
        folder, digest = config.get(f"{prefix}corpus_dir"), f"{prefix}corpus_digest"
        if folder is not None and config.get(digest) is None:  # a config whose corpus_dir was set after it was built
            config[digest] = corpus_content_digest(folder)
    skip = set(NOT_HASHED) | {k for k, v in HASHED_UNLESS.items() if k in config and config[k] == v}
    skip |= {f"{prefix}corpus_dir" for prefix in ("", "teacher_") if config.get(f"{prefix}corpus_digest") is not None}
    return {k: hashed_fields(v) for k, v in config.items() if k not in skip}


def config_digest(config: dict) -> str:
    """10-hex-digit hash of ``hashed_fields(config)``."""
    return hashlib.sha256(json.dumps(hashed_fields(config), sort_keys=True).encode()).hexdigest()[:10]


def _differences(stored, requested, prefix: str = "", allowed: frozenset = frozenset()) -> list[str]:
    """``"name: stored -> requested"`` for every leaf that differs (nested keys dotted), but for
    leaves named in `allowed`."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in sorted(set(stored) | set(requested)):
            if key not in allowed:
                out += _differences(stored.get(key), requested.get(key), f"{prefix}{key}.", allowed)
        return out
    return [] if stored == requested else [f"{prefix[:-1]}: {stored!r} -> {requested!r}"]


def claim_run_dir(run_dir: str | Path, section: str, config: dict, force: bool = False) -> Path:
    """Check that `run_dir` may hold the run of `config` (stored as ``config.json[section]``).

    A file there, or a run folder whose stored config differs (the error lists the fields), is a
    ValueError; `force` removes an existing run folder so the run starts afresh. An unfinished run
    may differ in what a resume can change (``trainer.RESUMABLE_CHANGES``: more steps, ...). Under
    torchrun only rank 0 removes a folder, and every rank returns once it has.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} is an existing file; give a folder (new or an earlier run's)")
    stored_path = run_dir / "config.json"
    is_run = stored_path.is_file() or (run_dir / RESULT).is_file() or has_checkpoint(run_dir)
    if force and is_run:
        if distributed.is_main_process():
            shutil.rmtree(run_dir)
    elif stored_path.is_file():
        stored = json.loads(stored_path.read_text()).get(section)
        if stored is None:
            raise ValueError(
                f"run folder {run_dir} holds another kind of run (no {section!r} settings in its "
                "config.json); use another --run-dir, or --force to replace it"
            )
        allowed = frozenset() if (run_dir / RESULT).is_file() else frozenset(RESUMABLE_CHANGES)
        changed = _differences(hashed_fields(stored), hashed_fields(config), allowed=allowed)
        if changed:
            raise ValueError(
                f"run folder {run_dir} holds a run with other settings ({'; '.join(changed)}); "
                "use another --run-dir, or --force to start afresh there"
            )
    distributed.barrier()
    return run_dir


def read_result(run_dir: str | Path) -> dict | None:
    """The run's ``result.json``, or None while the run is not complete."""
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(run_dir: str | Path, result: dict) -> None:
    """Write ``result.json`` atomically (the run's completion marker)."""
    path = Path(run_dir) / RESULT
    tmp = path.with_name(f".{RESULT}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): wall times on a shared
    machine mean little without it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def seconds_before_resume(*trainers) -> dict[str, float]:
    """{"wall", "cpu"}: training seconds the given trainers (None skipped) spent in earlier processes,
    read from their checkpoints; added to this process's time, a resumed run reports its whole cost."""
    done = [t.resumed_seconds for t in trainers if t is not None]
    return {k: sum(d[k] for d in done) for k in ("wall", "cpu")}


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "checkpoints" / "last.pt").is_file()


def load_run(run_dir: str | Path, section: str, config_class: type[C], how_to_run: str) -> tuple[Path, C, dict]:
    """(the folder, ``config.json[section]`` as ``config_class``, ``result.json``) of a completed
    run; FileNotFoundError naming ``how_to_run`` (the command that makes one) while it is not."""
    run_dir = Path(run_dir)
    metrics = read_result(run_dir)
    if metrics is None:
        raise FileNotFoundError(f"{run_dir} holds no completed {section} run (no {RESULT}); run {how_to_run} first")
    config = config_class.from_dict(json.loads((run_dir / "config.json").read_text())[section])
    return run_dir, config, metrics


def save_student_asr(model: RNNTModel, tokenizer: Tokenizer, path: str | Path) -> None:
    """Save an RNN-T model whose encoder is materialised (``CompressedEncoderSpec`` + all weights)."""
    torch.save(
        {
            "format": ASR_FORMAT,
            "encoder_spec": encoder_spec(model.encoder).to_dict(),
            "rnnt_config": model.config.to_dict(),
            "tokenizer": tokenizer.to_dict(),
            "model": model.state_dict(),
        },
        path,
    )


def load_asr(path: str | Path) -> tuple[RNNTModel, Tokenizer]:
    """The RNN-T model (eval, CPU) and tokenizer of an ``asr.pt`` in either format (module docstring)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") == ASR_FORMAT:
        encoder = build_encoder(CompressedEncoderSpec.from_dict(state["encoder_spec"]))
    else:
        encoder = ConformerEncoder(ConformerConfig.from_dict(state["encoder_config"]))
    model = RNNTModel(encoder, RNNTConfig.from_dict(state["rnnt_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer_from_dict(state["tokenizer"])
