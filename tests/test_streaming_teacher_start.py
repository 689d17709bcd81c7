"""The streaming teacher that starts from the fine-tuned offline teacher (``FinetuneConfig.init="offline"``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig
from kdlab.train.recipes.finetune import FinetuneConfig, default_finetune_dir, load_finetune, run_finetune
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.student_start import weights_digest
from kdlab.train.recipes.teacher import teacher_finetune_config


def _ctc_head_of(run_dir) -> dict:
    """The CTC head's weights in a run's last checkpoint (read here, not through the recipe)."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    return {k: v for k, v in state.items() if k.startswith("head.")}


def test_a_streaming_run_from_the_offline_teacher_starts_from_its_model_and_ctc_head():
    with_ctc = CTCWarmupConfig(steps=2, aux_weight=0.3)  # the tiny profile trains no CTC head: give it one
    offline_config = FinetuneConfig.for_profile("tiny", steps=2, ctc_warmup=with_ctc)
    offline = run_finetune(offline_config, device="cpu", progress=False)
    config = FinetuneConfig.for_profile(
        "tiny",
        streaming=True,
        init="offline",
        steps=2,
        offline_run_dir=str(offline.run_dir),
        ctc_warmup=replace(with_ctc, steps=0),
    )
    assert config.trainer.lr == get_profile("tiny").streaming_from_offline_lr
    result = run_finetune(config, device="cpu", progress=False)
    assert result.run_dir.name.startswith("finetune-streaming-offline-")
    assert result.model.encoder.config.streaming and result.metrics["offline_run_dir"] == str(offline.run_dir)

    head = torch.nn.Linear(offline.model.encoder.config.d_model, offline.tokenizer.vocab_size)
    head.load_state_dict({k.removeprefix("head."): v for k, v in _ctc_head_of(offline.run_dir).items()})
    assert result.metrics["start_digest"] == weights_digest(offline.model, head)
    assert weights_digest(result.model) != weights_digest(offline.model)  # and then it trained
    assert result.metrics["asr_cost"]["ctc"].get("steps", 0) == 0  # no CTC warm-start of its own
    assert result.cmvn.to_dict() == offline.cmvn.to_dict()


def test_by_default_it_starts_from_the_profiles_offline_teacher_with_the_same_steps():
    config = FinetuneConfig.for_profile("tiny", streaming=True, init="offline", steps=2)
    assert config.ctc_warmup.steps == 0
    expected = FinetuneConfig.for_profile("tiny", steps=2)
    assert config.offline_teacher() == expected
    result = run_finetune(config, device="cpu", progress=False)
    assert result.metrics["offline_run_dir"] == str(default_finetune_dir(expected))
    offline = load_finetune(default_finetune_dir(expected))
    assert result.metrics["start_digest"] == weights_digest(offline.model)  # no CTC head at tiny


def test_the_profile_decides_where_the_teachers_start():
    assert teacher_finetune_config("tiny", streaming=True).init == get_profile("tiny").streaming_teacher_init == "ssl"
    default = teacher_finetune_config("default", streaming=True)
    assert default.init == "offline" and default.ctc_warmup.steps == 0
    assert default.trainer.lr == get_profile("default").streaming_from_offline_lr
    assert teacher_finetune_config("default").init == "ssl"  # the offline teacher
    assert teacher_finetune_config("default", streaming=True, init="ssl").ctc_warmup.steps > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"streaming": False}, "set streaming=True"),
        ({"ctc_warmup": CTCWarmupConfig(steps=3)}, "set ctc_warmup.steps=0"),
    ],
)
def test_an_offline_start_is_refused_where_it_cannot_apply(overrides, message):
    config = FinetuneConfig.for_profile("tiny", streaming=True, init="offline", steps=2)
    with pytest.raises(ValueError, match=message):
        replace(config, **overrides)
