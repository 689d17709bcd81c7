"""The cached teacher: BEST-RQ pre-training + RNN-T fine-tuning, run once and reused.

    teacher = ensure_teacher("default")                  # offline, SSL init
    teacher.encoder, teacher.model, teacher.tokenizer, teacher.cmvn
    teacher.metrics["test"]["wer"]
    ensure_teacher("default", streaming=True)            # the streaming teacher (same pre-training;
                                                         # at default it starts from the offline teacher)

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
from kdlab.train.recipes.profiles import get_profile


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


def teacher_finetune_config(
    profile: str = "default",
    seed: int = 0,
    streaming: bool = False,
    init: str | None = None,
    finetune_steps: int | None = None,
    corpus_dir: str | None = None,
    tokenizer: str | None = None,
) -> FinetuneConfig:
    """The fine-tuning config of the profile's teacher (arguments as in ``ensure_teacher``). `init`
    None: "ssl" offline, the profile's ``streaming_teacher_init`` streaming."""
    if init is None:
        init = get_profile(profile).streaming_teacher_init if streaming else "ssl"
    return FinetuneConfig.for_profile(
        profile, seed, streaming=streaming, init=init, steps=finetune_steps, corpus_dir=corpus_dir, tokenizer=tokenizer
    )


def ensure_teacher(
    profile: str = "default",
    seed: int = 0,
    streaming: bool = False,
    init: str | None = None,
    device: str = "auto",
    progress: bool = True,
    finetune_steps: int | None = None,
    corpus_dir: str | None = None,
    tokenizer: str | None = None,
) -> TeacherBundle:
    """The profile's teacher, trained first if its runs are missing (resumed if interrupted).

    `init` "random" gives the baseline without pre-training (same architecture and budget), "offline"
    (streaming) starts from the offline teacher, "ssl" from the BEST-RQ encoder (None: the profile's
    choice, ``teacher_finetune_config``);
    `finetune_steps` replaces the profile's fine-tuning budget (a separate cached run);
    `corpus_dir` / `tokenizer`: another corpus (``kdlab data --out DIR``) and "char" / "bpe[:N]"
    (None: the profile's).
    """
    config = teacher_finetune_config(profile, seed, streaming, init, finetune_steps, corpus_dir, tokenizer)
    finetune = run_finetune(config, device=device, progress=progress)
    pretrain = None
    if config.init != "random":
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
