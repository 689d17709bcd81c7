"""Compression on a recipe profile: the profile's SSL teacher encoder and training data, then ``run_compress``.

    result = compress_profile(CompressConfig.for_profile("default", "kd+l0", 0.5))

The teacher is the BEST-RQ pre-trained encoder of the profile (``run_pretrain`` with
``teacher_seed``: reused when that run is complete, trained first otherwise), so compression is
task-agnostic; the batches are the profile corpus' train split with the pre-training CMVN, no
SpecAugment. Default run folder: beside the pre-training,
``runs/teacher-<profile>-<hash>/compress-<method>-<target>-<config hash>``.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.train.recipes.compress import CompressResult, run_compress
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.pretrain import PretrainConfig, PretrainResult, corpus_folder, run_pretrain
from kdlab.train.recipes.runs import claim_run_dir, config_digest


def ssl_teacher(config: CompressConfig, device: str = "auto", progress: bool = True) -> PretrainResult:
    """The profile's pre-training run with ``config.teacher_seed`` (trained first if missing)."""
    pretrain = PretrainConfig.for_profile(config.profile, config.teacher_seed, corpus_dir=config.teacher_corpus_dir)
    return run_pretrain(pretrain, device=device, progress=progress)


def default_compress_dir(config: CompressConfig, teacher: PretrainResult) -> Path:
    """``<teacher root>/compress-<method>-<target>-<hash of the config>``."""
    return (
        teacher.run_dir.parent
        / f"compress-{config.method}-{config.target_sparsity:g}-{config_digest(config.to_dict())}"
    )


def compress_profile(
    config: CompressConfig,
    run_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> CompressResult:
    """Compress the profile's SSL teacher encoder (see the module docstring); an explicit `run_dir`
    holding other settings is refused before the teacher is trained (`force`: replaced)."""
    if run_dir is not None:
        claim_run_dir(run_dir, "compress", config.to_dict(), force)
    teacher = ssl_teacher(config, device, progress)
    pretrain = teacher.config
    data = SpeechData.from_corpus(
        corpus_folder(pretrain.profile, pretrain.corpus_seed, pretrain.corpus_dir),
        pretrain.cmvn_utterances,
        teacher.cmvn,
    )
    run_dir = Path(run_dir) if run_dir is not None else default_compress_dir(config, teacher)
    return run_compress(
        config,
        teacher.model,
        data.train_loader(config.frames_per_batch, config.seed),
        run_dir,
        device=device,
        progress=progress,
        force=force,
    )
