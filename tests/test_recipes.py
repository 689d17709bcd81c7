"""Teacher recipes at the tiny profile: CLI end to end, run folders, resume, reuse, overfitting."""

from __future__ import annotations

import json

import pytest
import torch
from stand_ins import isolated_kdlab_home

from kdlab.cli import main
from kdlab.data.batching import collate
from kdlab.data.corpus import ensure_corpus
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.decoding import decode
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.recipes import finetune as ft
from kdlab.train.recipes import pretrain as pt
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.recipes.teacher import ensure_teacher

torch.set_num_threads(1)
STEPS = 120  # overfit steps on one utterance (about 3 s)


@pytest.fixture(scope="module")
def corpus():
    return ensure_corpus("tiny", progress=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory, corpus):
    """A KDLAB_HOME whose runs/ is empty and whose corpus (and feature cache) is the shared tiny one."""
    root = tmp_path_factory.mktemp("home")
    patch = isolated_kdlab_home(root, corpus)
    yield root
    patch.undo()


def _cli(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    return out.out


def test_cli_pretrain_and_finetune_write_complete_runs_that_the_teacher_cache_reuses(home, capsys, monkeypatch):
    out = _cli(capsys, "pretrain", "--profile", "tiny", "--device", "cpu", "--no-progress")
    (pre_dir,) = (home / "runs").glob("teacher-tiny-*/pretrain")
    assert f"run dir:          {pre_dir}" in out and "dev masked acc." in out
    for name in ("config.json", "history.json", "checkpoints/last.pt", "encoder.pt", "cmvn.json", "result.json"):
        assert (pre_dir / name).is_file(), name
    history = json.loads((pre_dir / "history.json").read_text())
    steps = pt.PretrainConfig.for_profile("tiny").trainer.max_steps
    assert [r["step"] for r in history if r["kind"] == "train"][-1] == steps
    assert 0.0 <= json.loads((pre_dir / "result.json").read_text())["dev_masked_accuracy"] <= 1.0

    out = _cli(capsys, "finetune", "--profile", "tiny", "--device", "cpu", "--no-progress")
    (ft_dir,) = pre_dir.parent.glob("finetune-offline-ssl-*")
    assert f"run dir:      {ft_dir}" in out and "test greedy:  WER" in out
    result = json.loads((ft_dir / "result.json").read_text())
    assert result["test"]["utterances"] == 40 and result["dev"]["utterances"] == 40  # whole splits, none dropped
    assert len((ft_dir / "test_transcripts.jsonl").read_text().splitlines()) == 40
    config = json.loads((ft_dir / "config.json").read_text())["finetune"]
    assert config["ssl_run_dir"] is None and config["init"] == "ssl"

    # Completed runs are reused: nothing trains again, from the CLI or from ensure_teacher.
    def no_training(self):
        raise AssertionError("a completed run was trained again")

    monkeypatch.setattr(pt.Trainer, "fit", no_training)
    stamp = (ft_dir / "asr.pt").stat().st_mtime_ns
    _cli(capsys, "finetune", "--profile", "tiny", "--device", "cpu", "--no-progress")
    teacher = ensure_teacher("tiny", device="cpu", progress=False)
    assert teacher.finetune.run_dir == ft_dir and teacher.pretrain.run_dir == pre_dir
    assert (ft_dir / "asr.pt").stat().st_mtime_ns == stamp
    assert teacher.metrics == result and teacher.encoder is teacher.model.encoder


def test_interrupted_pretraining_resumes_to_the_same_weights(corpus, tmp_path):
    base = pt.PretrainConfig.for_profile("tiny")
    base.corpus_dir = str(corpus)
    full = pt.run_pretrain(base, tmp_path / "full", device="cpu", progress=False)
    # An interrupted run: 2 of 4 steps done and checkpointed (within the warm-up, so the
    # learning rates of those steps do not depend on max_steps), no result.json yet.
    first = pt.PretrainConfig.from_dict({**base.to_dict(), "trainer": {**base.trainer.to_dict(), "max_steps": 2}})
    pt.run_pretrain(first, tmp_path / "cut", device="cpu", progress=False)
    (tmp_path / "cut" / "result.json").unlink()
    resumed = pt.run_pretrain(base, tmp_path / "cut", device="cpu", progress=False)
    assert resumed.metrics["resumed_at_step"] == 2 and resumed.metrics["steps"] == 4
    for name, value in full.encoder.state_dict().items():
        assert torch.equal(value, resumed.encoder.state_dict()[name]), name


def test_eval_loader_keeps_every_utterance_even_longer_than_the_frame_bound(corpus):
    data = SpeechData.from_corpus(corpus, cmvn_utterances=20)
    longest = max(u.duration for u in data.splits["test"]) * 100
    loader = data.eval_loader("test", max_frames=int(longest) // 2)
    ids = [i for batch in loader for i in batch.ids]
    assert sorted(ids) == sorted(u.id for u in data.splits["test"])


def test_configs_round_trip_and_reject_bad_values(tmp_path):
    config = ft.FinetuneConfig.for_profile("tiny", streaming=True, init="random", steps=3)
    data = json.loads(json.dumps(config.to_dict()))
    assert ft.FinetuneConfig.from_dict(data) == config
    assert config.encoder_config().streaming and config.encoder_config().chunk_size == 8
    assert config.digest() != ft.FinetuneConfig.for_profile("tiny", init="random", steps=3).digest()
    pre = pt.PretrainConfig.for_profile("tiny", steps=7)
    assert pt.PretrainConfig.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert pre.digest() == pt.PretrainConfig.for_profile("tiny", steps=7).digest()
    with pytest.raises(ValueError, match="init must be one of"):
        ft.FinetuneConfig.for_profile("tiny", init="imagenet")
    with pytest.raises(ValueError, match="unknown recipe profile 'huge'"):
        pt.PretrainConfig.for_profile("huge")


def test_default_teacher_has_2_to_8_million_parameters():
    config = ft.FinetuneConfig.for_profile("default")
    model = RNNTModel(ConformerEncoder(config.encoder_config()), config.rnnt)
    assert 2e6 <= sum(p.numel() for p in model.parameters()) <= 8e6
    assert pt.PretrainConfig.for_profile("default").encoder == config.encoder  # SSL init fits the fine-tuning


def test_ssl_init_refuses_an_encoder_of_another_architecture(corpus, tmp_path):
    config = pt.PretrainConfig.for_profile("tiny", steps=1)
    config.corpus_dir = str(corpus)
    pt.run_pretrain(config, tmp_path / "pre", device="cpu", progress=False)
    wider = ft.FinetuneConfig.for_profile(
        "tiny",
        steps=1,
        ssl_run_dir=str(tmp_path / "pre"),
        corpus_dir=str(corpus),
        encoder=teacher_config("tiny", d_model=48),
    )
    with pytest.raises(ValueError, match=r"differs from FinetuneConfig.encoder in \['d_model'\]"):
        ft.run_finetune(wider, tmp_path / "ft", device="cpu", progress=False)


def test_rnnt_memorises_a_fixed_utterance(corpus):
    """Overfit check: on one fixed utterance the loss collapses and beam search decodes it exactly.

    A model memorising a single utterance tends to emit several characters on one encoder frame,
    so decoding allows up to 10 symbols per frame here. Greedy search can still leave the best
    alignment (it dropped "o f" of "leo flew" at P(y|x) = 0.94), so the check uses beam search."""
    data = SpeechData.from_corpus(corpus, cmvn_utterances=20)
    loader = data.eval_loader("train", limit=40)
    dataset = loader.dataset
    shortest = min(range(40), key=lambda i: data.splits["train"][i].duration)
    batch = collate([dataset[shortest]])
    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config("tiny", dropout=0.0))
    model = RNNTModel(
        encoder,
        RNNTConfig(
            vocab_size=data.tokenizer.vocab_size, pred_embed_dim=16, pred_hidden=128, joint_dim=128, dropout=0.0
        ),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(STEPS):
        loss = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.01 * losses[0], losses[::10]
    assert decode(model, batch, data.tokenizer, method="beam", beam=4, max_symbols_per_frame=10) == batch.texts
