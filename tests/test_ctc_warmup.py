"""CTC warm-start of the encoder before RNN-T fine-tuning (tiny corpus, tiny encoder)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from kdlab.data.corpus import ensure_corpus
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.train.recipes import finetune as ft
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig, EncoderCTC, ctc_warm_start
from kdlab.train.recipes.data_setup import SpeechData
from kdlab.train.rng import seed_everything

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return SpeechData.from_corpus(ensure_corpus("tiny", progress=False), cmvn_utterances=40)


def _encoder() -> ConformerEncoder:
    seed_everything(0)
    return ConformerEncoder(teacher_config("tiny"))


def test_warm_start_trains_the_encoder_in_place_and_lowers_the_ctc_loss(data, tmp_path):
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head, metrics = ctc_warm_start(
        encoder,
        data,
        CTCWarmupConfig(steps=12, lr=5e-3, warmup_steps=2),
        frames_per_batch=3000,
        seed=0,
        run_dir=tmp_path,
        device="cpu",
        progress=False,
    )

    assert metrics["steps"] == 12 and metrics["wall_seconds"] > 0
    assert head.out_features == data.tokenizer.vocab_size and head.in_features == encoder.config.d_model
    assert any(not torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    history = json.loads((tmp_path / "history.json").read_text())
    losses = [r["loss"] for r in history if r["kind"] == "train"]
    assert losses[-1] < losses[0]


def test_encoder_ctc_loss_is_the_mean_over_utterances_of_the_summed_ctc(data):
    model = EncoderCTC(_encoder(), data.tokenizer.vocab_size).eval()
    batch = next(iter(data.eval_loader("dev", limit=4)))
    with torch.no_grad():
        log_probs, lengths = model.log_probs(batch.features, batch.feature_lengths)
        each = [
            torch.nn.functional.ctc_loss(
                log_probs[i : i + 1, : lengths[i]].transpose(0, 1),
                batch.tokens[i : i + 1, : batch.token_lengths[i]],
                lengths[i : i + 1],
                batch.token_lengths[i : i + 1],
                reduction="sum",
            )
            for i in range(len(lengths))
        ]
        torch.testing.assert_close(model(batch), torch.stack(each).mean())


def test_zero_steps_leaves_the_encoder_untouched(data, tmp_path):
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    assert ctc_warm_start(
        encoder,
        data,
        CTCWarmupConfig(steps=0),
        frames_per_batch=3000,
        seed=0,
        run_dir=tmp_path,
        device="cpu",
        progress=False,
    ) == (None, {})
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert not (tmp_path / "history.json").exists()


def test_a_finished_warm_start_is_reused_not_retrained(data, tmp_path):
    config = CTCWarmupConfig(steps=4, lr=5e-3, warmup_steps=1)
    first = _encoder()
    ctc_warm_start(first, data, config, frames_per_batch=3000, seed=0, run_dir=tmp_path, device="cpu", progress=False)
    again = _encoder()
    _, metrics = ctc_warm_start(
        again, data, config, frames_per_batch=3000, seed=0, run_dir=tmp_path, device="cpu", progress=False
    )
    assert metrics["steps"] == 4
    assert all(torch.equal(first.state_dict()[k], v) for k, v in again.state_dict().items())


def test_fine_tuning_runs_the_warm_start_first_and_records_it(data, tmp_path):
    config = ft.FinetuneConfig.for_profile(
        "tiny",
        init="random",
        steps=2,
        corpus_dir=str(data.corpus_dir),
        ctc_warmup=CTCWarmupConfig(steps=3, lr=5e-3, warmup_steps=1),
    )
    result = ft.run_finetune(config, tmp_path / "ft", device="cpu", progress=False)
    assert result.metrics["ctc_warmup"]["steps"] == 3
    warm = json.loads((tmp_path / "ft" / "ctc_warmup" / "history.json").read_text())
    assert max(r["step"] for r in warm) == 3
    assert (
        config.digest()
        != ft.FinetuneConfig.for_profile("tiny", init="random", steps=2, corpus_dir=str(data.corpus_dir)).digest()
    )


def test_config_rejects_bad_values_and_the_default_profile_warms_up():
    with pytest.raises(ValueError, match="steps"):
        CTCWarmupConfig(steps=-1)
    with pytest.raises(ValueError, match="lr"):
        CTCWarmupConfig(steps=1, lr=0.0)
    assert ft.FinetuneConfig.for_profile("default").ctc_warmup.steps > 0
    assert ft.FinetuneConfig.for_profile("tiny").ctc_warmup.steps == 0


def test_sequential_fine_tunes_carry_the_profiles_student_warm_start_through_their_config(tmp_path):
    from kdlab.train.recipes.profiles import get_profile
    from kdlab.train.recipes.sequential import SequentialConfig

    config = SequentialConfig.for_profile("default", tmp_path / "compress-run")
    teacher = ft.FinetuneConfig.for_profile("default").ctc_warmup  # the student schedule: its steps, the same rest
    assert config.ctc_warmup.steps == get_profile("default").student_ctc_steps > 0
    assert replace(config.ctc_warmup, steps=teacher.steps) == teacher
    assert config.trainer.max_steps == get_profile("default").student_rnnt_steps
    again = SequentialConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.ctc_warmup == config.ctc_warmup and again.digest() == config.digest()
    without = SequentialConfig.for_profile("default", tmp_path / "compress-run", ctc_warmup=CTCWarmupConfig())
    assert without.digest() != config.digest()


def test_rnnt_with_ctc_adds_the_weighted_ctc_loss_of_the_head(data):
    from kdlab.models.rnnt import RNNTConfig, RNNTModel
    from kdlab.train.recipes.ctc_warmup import RNNTWithCTC

    encoder = _encoder().eval()
    rnnt = RNNTModel(
        encoder, RNNTConfig(vocab_size=data.tokenizer.vocab_size, pred_embed_dim=8, pred_hidden=16, joint_dim=16)
    ).eval()
    probe = EncoderCTC(encoder, data.tokenizer.vocab_size)
    model = RNNTWithCTC(rnnt, probe.head, weight=0.3)
    batch = next(iter(data.eval_loader("dev", limit=4)))
    with torch.no_grad():
        loss, parts = model(batch)
        torch.testing.assert_close(parts["loss_rnnt"], rnnt(batch))
        torch.testing.assert_close(parts["loss_ctc"], probe(batch))
        torch.testing.assert_close(loss, rnnt(batch) + 0.3 * probe(batch))


def test_the_warm_start_head_keeps_training_beside_the_transducer_and_is_not_saved(data, tmp_path):
    config = ft.FinetuneConfig.for_profile(
        "tiny",
        init="random",
        steps=3,
        corpus_dir=str(data.corpus_dir),
        ctc_warmup=CTCWarmupConfig(steps=2, lr=5e-3, warmup_steps=1, aux_weight=0.5),
    )
    result = ft.run_finetune(config, tmp_path / "ft", device="cpu", progress=False)
    train = [r for r in json.loads((tmp_path / "ft" / "history.json").read_text()) if r["kind"] == "train"]
    assert train and train[-1]["step"] == 3
    for record in train:  # averages over the logging period; the sum is linear, so it holds for them too
        assert record["loss"] == pytest.approx(record["loss_rnnt"] + 0.5 * record["loss_ctc"], rel=1e-5)
    saved = torch.load(tmp_path / "ft" / "asr.pt", weights_only=True)["model"]
    assert set(saved) == set(result.model.state_dict())
    assert not any(key.startswith("head.") for key in saved)


def test_without_warm_start_steps_an_auxiliary_weight_gets_a_fresh_head(data, tmp_path):
    head, metrics = ctc_warm_start(
        _encoder(),
        data,
        CTCWarmupConfig(steps=0, aux_weight=0.3),
        frames_per_batch=3000,
        seed=0,
        run_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    assert metrics == {} and head.out_features == data.tokenizer.vocab_size
    with pytest.raises(ValueError, match="aux_weight"):
        CTCWarmupConfig(aux_weight=-0.1)
