"""Devices of side-by-side workers (study --workers on several GPUs) and bf16 training steps."""

from __future__ import annotations

import time

import pytest
import torch

from kdlab.models.rnnt import RNNTModel
from kdlab.study import parallel
from kdlab.train.devices import worker_device
from kdlab.train.precision import PRECISION_ENV
from kdlab.train.recipes.runs import config_digest
from kdlab.train.trainer import Trainer, TrainerConfig


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_workers_spread_round_robin_over_several_gpus(monkeypatch):
    _gpus(monkeypatch, 3)
    assert [worker_device("auto", i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert worker_device("cuda", 4) == "cuda:1"
    assert worker_device("cuda:2", 0) == "cuda:2" and worker_device("cpu", 1) == "cpu"


def test_one_gpu_or_none_keeps_the_device_as_given(monkeypatch):
    _gpus(monkeypatch, 1)
    assert worker_device("auto", 3) == "auto"
    _gpus(monkeypatch, 0)
    assert worker_device("cuda", 1) == "cuda"


def _slow_index(_: int) -> int:
    time.sleep(0.5)
    return parallel.current_worker_index()


def test_each_pool_worker_has_its_own_number():
    with parallel.worker_pool(2) as pool:
        assert sorted(set(pool.map(_slow_index, range(4)))) == [0, 1]


def test_bf16_runs_the_step_under_autocast_and_fp32_does_not(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    seen = {}

    def step_fn(model, batch):
        seen.setdefault(trainer.config.precision, []).append(torch.is_autocast_enabled("cpu"))
        out = model(batch)
        seen.setdefault("dtype", []).append(out.dtype)
        return out.float().pow(2).mean(), {}

    for precision in ("fp32", "bf16"):
        trainer = Trainer(
            torch.nn.Linear(4, 2),
            TrainerConfig(max_steps=2, warmup_steps=0, device="cpu", progress=False, precision=precision),
            step_fn,
            [torch.randn(3, 4)],
        )
        trainer.fit()
    assert seen["fp32"] == [False, False] and seen["bf16"] == [True, True]
    assert seen["dtype"] == [torch.float32] * 2 + [torch.bfloat16] * 2


def test_rnnt_loss_stays_float32_inside_a_bf16_step():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 6, generator=generator).bfloat16()
    lengths, tokens, token_lengths = torch.tensor([5, 4]), torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = RNNTModel.loss(logits, lengths, tokens, token_lengths)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(RNNTModel.loss(logits.float(), lengths, tokens, token_lengths).item(), rel=1e-6)


def test_precision_comes_from_the_option_and_fp32_keeps_run_names(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert TrainerConfig().precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainerConfig(precision="fp16")
    fp32 = TrainerConfig(precision="fp32").to_dict()
    assert config_digest(fp32) == config_digest({k: v for k, v in fp32.items() if k != "precision"})
    assert config_digest(TrainerConfig().to_dict()) != config_digest(fp32)
