"""The cached teacher: BEST-RQ pre-training + RNN-T fine-tuning, run once and reused.

    teacher = ensure_teacher("default")                  # offline, SSL init
    teacher.encoder, teacher.model, teacher.tokenizer, teacher.cmvn
    teacher.metrics["test"]["wer"]
    ensure_teacher("default", streaming=True)            # the streaming teacher (same pre-training)

Runs live in ``runs/teacher-<profile>-<hash>/`` (``pretrain/``, ``finetune-<mode>-<init>-<hash>/``),
the same folders ``python -m kdlab pretrain`` / ``finetune`` use, so whichever runs first
trains and every later caller (notebooks, the compression recipes, benchmarks) reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlab.data.features import GlobalCMVN
from kdlab.data.tokenizer import Tokenizer
from kdlab.models.conformer import ConformerConfig, ConformerEncoder
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.recipes.finetune import FinetuneConfig, FinetuneResult, run_finetune
from kdlab.train.recipes.pretrain import PretrainResult, default_pretrain_dir, load_pretrain


@dataclass
class TeacherBundle:
    """A fine-tuned teacher (eval mode, CPU) with everything needed to use it.

    ``encoder`` is ``model.encoder``; ``pretrain`` is None for a random-init run;
    ``metrics`` are the fine-tuning run's (dev / test WER and CER, params, wall time).
    """

    encoder: ConformerEncoder
    model: RNNTModel
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    encoder_config: ConformerConfig
    rnnt_config: RNNTConfig
    pretrain: PretrainResult | None
    finetune: FinetuneResult
    metrics: dict


def ensure_teacher(
    profile: str = "default",
    seed: int = 0,
    streaming: bool = False,
    init: str = "ssl",
    device: str = "auto",
    progress: bool = True,
    finetune_steps: int | None = None,
    corpus_dir: str | None = None,
    tokenizer: str | None = None,
) -> TeacherBundle:
    """The profile's teacher, trained first if its runs are missing (resumed if interrupted).

    `init` "random" gives the baseline without pre-training (same architecture and budget);
    `finetune_steps` replaces the profile's fine-tuning budget (a separate cached run);
    `corpus_dir` / `tokenizer`: another corpus (``kdlab data --out DIR``) and "char" / "bpe[:N]"
    (None: the profile's).
    """
    config = FinetuneConfig.for_profile(
        profile, seed, streaming=streaming, init=init, steps=finetune_steps, corpus_dir=corpus_dir, tokenizer=tokenizer
    )
    finetune = run_finetune(config, device=device, progress=progress)
    pretrain = None
    if init == "ssl":
        pretrain = load_pretrain(default_pretrain_dir(config.default_pretrain()))
    model = finetune.model
    return TeacherBundle(
        model.encoder,
        model,
        finetune.tokenizer,
        finetune.cmvn,
        model.encoder.config,
        model.config,
        pretrain,
        finetune,
        finetune.metrics,
    )
