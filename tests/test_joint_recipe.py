"""Joint route (prune / factorise while training RNN-T): every method end to end, streaming, the
loss parts, materialisation, reuse and resume, the Lagrangian, the CLI at the tiny profile.

As in test_compress_recipe.py the teacher is a tiny conformer with 20-dim input features (with
80-dim features the subsampling front-end holds half of the tiny encoder); its encoder stands in
for the SSL encoder every student starts from, the whole RNN-T model for the fine-tuned teacher
(``kd_source`` "finetuned"). Data: fixed random features with short character transcripts (a
stand-in for ``SpeechData``); the teacher is random, which is all the mechanics need.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from kdlab.cli import main
from kdlab.commands import _compression_args as compression_args
from kdlab.compress.kd_losses import DistillationConfig
from kdlab.compress.structures import GateSet
from kdlab.data.batching import Batch
from kdlab.data.corpus import ensure_corpus
from kdlab.data.features import GlobalCMVN
from kdlab.data.manifest import Utterance
from kdlab.data.tokenizer import CharTokenizer
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.paths import data_cache
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig
from kdlab.train.recipes.joint import run_joint
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.joint_model import JointLoss, build_joint_student
from kdlab.train.recipes.runs import load_asr
from kdlab.train.recipes.student_spec import METHODS
from kdlab.train.recipes.student_start import weights_digest

torch.set_num_threads(1)
FEATURES = 20
TOKENIZER = CharTokenizer()
RNNT = RNNTConfig(vocab_size=TOKENIZER.vocab_size, pred_embed_dim=16, pred_hidden=32, joint_dim=32, dropout=0.0)


def _batch(seed: int, texts: list[str], frames: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    ids = [TOKENIZER.encode(text) for text in texts]
    tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for row, sequence in enumerate(ids):
        tokens[row, : len(sequence)] = torch.tensor(sequence)
    lengths = torch.tensor([frames - 10 * (i % 2) for i in range(len(texts))])
    return Batch(
        torch.randn(len(texts), frames, FEATURES, generator=generator),
        lengths,
        tokens,
        torch.tensor([len(s) for s in ids]),
        texts,
        [f"{seed}-{i}" for i in range(len(texts))],
    )


class FakeData:
    """``SpeechData`` stand-in: one train batch, one dev / test batch; ``fail_after`` makes the
    train loaders raise after that many batches in all phases together (an interrupted run)."""

    tokenizer = TOKENIZER
    cmvn = GlobalCMVN(torch.zeros(FEATURES), torch.ones(FEATURES))
    evaluation_splits = ("dev", "test")

    def __init__(self, fail_after: int | None = None) -> None:
        self.train = [_batch(1, ["abc d", "ef g"], 60)]
        self.dev = [_batch(2, ["hi", "jk lm", "no", "p q"], 80)]
        self.fail_after = fail_after
        batch = self.train[0]  # the manifest behind the train batch (the CTC alignment check reads it)
        self.splits = {
            "train": [
                Utterance(f"train-{i}", "unused.wav", text, "s", int(frames) / 100)
                for i, (text, frames) in enumerate(zip(batch.texts, batch.feature_lengths))
            ]
        }

    def train_loader(self, max_frames: int, seed: int, specaugment=None):
        if self.fail_after is None:
            return self.train
        return Interrupting(self.train, self)

    def eval_loader(self, split: str, limit: int | None = None):
        return self.dev


class Interrupting:
    """Yields the batches of ``data`` epoch after epoch, raising once ``budget.fail_after`` batches
    were taken from every ``Interrupting`` of that budget."""

    def __init__(self, data: list, budget: FakeData) -> None:
        self.data, self.budget = data, budget

    def __iter__(self):
        for batch in self.data:
            if self.budget.fail_after == 0:
                raise KeyboardInterrupt("simulated interruption")
            self.budget.fail_after -= 1
            yield batch


@pytest.fixture(scope="module")
def teacher() -> RNNTModel:
    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config("tiny", input_dim=FEATURES, dropout=0.0))
    return RNNTModel(encoder, RNNT).eval()


def _config(method: str, target: float = 0.3, steps: int = 6, recovery_steps: int = 2, **overrides) -> JointConfig:
    return JointConfig(
        **{
            "method": method,
            "target_sparsity": target,
            "profile": "tiny",
            "steps": steps,
            "recovery_steps": recovery_steps,
            "lr": 2e-3,
            "dev_eval_utterances": 4,
            "latency": False,
            "chunk_size": 4,
            "rnnt": RNNT,
            "ctc_warmup": CTCWarmupConfig(steps=2, aux_weight=0.3),
            **overrides,
        }
    )


def _logits(model: RNNTModel, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch, return_logits=True)[1]


def _check_run(result, teacher) -> None:
    """result.json = the reloaded model; records and loss parts of the method; recovery ran."""
    m, config = result.metrics, result.config
    loaded, _ = load_asr(result.run_dir / "asr.pt")
    assert m["route"] == "joint" and m["method"] == config.method and m["mode"] == config.mode
    assert m["encoder_params"] == loaded.encoder.num_parameters() == result.model.encoder.num_parameters()
    assert m["params"] == sum(p.numel() for p in loaded.parameters())
    assert m["teacher_encoder_params"] == teacher.encoder.num_parameters()
    assert m["achieved_sparsity"] == pytest.approx(1 - m["encoder_params"] / m["teacher_encoder_params"])
    assert m["materialisation_error"] <= 1e-5
    assert 0.0 <= m["test"]["wer"] and m["test"]["utterances"] == 4 and m["macs_per_second"] > 0
    gates = GateSet.from_encoder(result.student.encoder)
    records = result.history.of("record")
    assert records and records[-1]["step"] == config.pruning_steps == config.steps - config.recovery_steps
    for record in records:
        assert {name: len(p) for name, p in record.get("gates", {}).items()} == {n: g.n for n, g in gates.gates.items()}
    train = result.history.of("train")
    parts = set().union(*train)
    assert {"loss_rnnt", "loss_ctc"} <= parts  # CTC stays beside the transducer after the warm-start
    kd_parts = {"loss_distill", "loss_output_kl"} if config.kd_source == "finetuned" else {"loss_distill"}
    assert {"loss_distill", "loss_output_kl"} & parts == (kd_parts if config.uses_kd() else set())
    assert ("loss_penalty" in parts) == ("l0" in config.method.split("+"))
    assert result.recovery_history.last("train")["step"] == config.recovery_steps
    assert "loss_penalty" not in result.recovery_history.last("train")
    assert m["ssl_encoder_digest"] == weights_digest(teacher.encoder)
    cost = m["asr_cost"]
    assert (cost["ctc"]["steps"], cost["rnnt"]["steps"]) == (config.ctc_warmup.steps, config.steps)
    assert cost["rnnt"]["cpu_seconds"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_jointly_materialises_and_recovers(method, teacher, tmp_path):
    result = run_joint(_config(method), teacher.encoder, FakeData(), tmp_path, device="cpu", progress=False)
    _check_run(result, teacher)
    if method in ("kd", "lrf", "kd+lrf"):  # the budget is fixed when the student is built
        assert abs(result.metrics["achieved_sparsity"] - 0.3) <= 0.03
    if "l0" in method:
        assert result.history.of("record")[-1]["gates"]


def test_materialised_student_equals_the_gated_one_and_runs_stream_by_stream(teacher, tmp_path):
    config = _config("kd+lrf+l0", recovery_steps=0, streaming=True)
    result = run_joint(config, teacher.encoder, FakeData(), tmp_path, device="cpu", progress=False)
    assert result.metrics["mode"] == "streaming" and result.recovery_history is None
    loaded, _ = load_asr(tmp_path / "asr.pt")
    assert result.student.encoder.config.streaming and loaded.encoder.config.chunk_size == 4
    batch = FakeData().dev[0]
    assert (_logits(result.student, batch) - _logits(loaded, batch)).abs().max() <= 1e-5
    features = batch.features[:1, :60]
    whole = loaded.encoder(features, torch.tensor([60]))[0]
    first, state = loaded.encoder.stream(features[:, :25])
    rest, _ = loaded.encoder.stream(features[:, 25:], state, final=True)
    assert torch.allclose(torch.cat([first, rest], dim=1), whole, atol=1e-5)


def test_output_and_layer_kd_vanish_when_the_student_is_the_teacher(teacher):
    config = _config("kd", target=0.0, kd_source="finetuned", distill=DistillationConfig(1.0, 1.0))
    student, _, info = build_joint_student(config, teacher.encoder)
    student.asr.predictor.load_state_dict(teacher.predictor.state_dict())  # the heads start fresh: copy them here
    student.asr.joiner.load_state_dict(teacher.joiner.state_dict())
    student.eval()
    batch = FakeData().dev[0]
    params = teacher.encoder.num_parameters()
    _, parts = JointLoss(config, teacher, params)(student, batch)
    assert info["student_sparsity"] == 0.0
    assert parts["loss_output_kl"] <= 1e-6 and parts["loss_distill"] <= 1e-5
    with torch.no_grad():
        student.asr.joiner.out.bias[1] += 3.0
    _, parts = JointLoss(config, teacher, params)(student, batch)
    assert parts["loss_output_kl"] > 1e-3
    _, parts = JointLoss(config, teacher, params, kd=False)(student, batch)
    assert set(parts) == {"loss_rnnt"}
    _, parts = JointLoss(
        replace(config, kd_source="ssl", distill=DistillationConfig(1.0, 0.0)), teacher.encoder, params
    )(student, batch)
    assert set(parts) == {"loss_rnnt", "loss_distill"}  # the SSL encoder has no outputs to distil


def test_a_pruned_rnnt_loss_is_per_token_and_output_kd_still_sees_the_full_logits(teacher):
    distill = DistillationConfig(layer_weight=1.0, output_weight=2.0)
    config = _config("kd", target=0.0, kd_source="finetuned", distill=distill, rnnt=replace(RNNT, prune_range=3))
    student, _, _ = build_joint_student(config, teacher.encoder)
    batch = FakeData().dev[0]
    loss, parts = JointLoss(config, teacher, teacher.encoder.num_parameters())(student.eval(), batch)
    assert set(parts) == {"loss_rnnt", "loss_simple", "loss_output_kl", "loss_distill"}
    transducer = parts["loss_rnnt"] + config.rnnt.simple_loss_scale * parts["loss_simple"]
    per_token = len(batch) / batch.token_lengths.sum()
    torch.testing.assert_close(transducer, student.asr(batch).detach() * per_token)
    torch.testing.assert_close(loss.detach(), transducer + parts["loss_distill"] + 2.0 * parts["loss_output_kl"])
    assert parts["loss_output_kl"] > 0


def test_every_student_starts_from_the_ssl_encoder_with_the_same_fresh_heads_and_a_per_token_rnnt(teacher):
    heads = {}
    for method in ("kd", "l0", "kd+lrf"):
        student, _, _ = build_joint_student(_config(method), teacher.encoder)
        heads[method] = weights_digest(student.asr.predictor, student.asr.joiner)
    other_seed, _, _ = build_joint_student(_config("l0", seed=1), teacher.encoder)
    assert len(set(heads.values())) == 1  # however the encoder was compressed
    assert weights_digest(other_seed.asr.predictor, other_seed.asr.joiner) != heads["l0"]
    assert heads["l0"] != weights_digest(teacher.predictor, teacher.joiner)  # not the (fine-tuned) teacher's
    gated, _, _ = build_joint_student(_config("l0"), teacher.encoder)
    for name, weight in teacher.encoder.state_dict().items():  # gates added, the SSL weights kept
        assert torch.equal(gated.asr.encoder.state_dict()[name], weight)
    config = _config("lrf", ctc_warmup=CTCWarmupConfig(steps=0))
    student, _, _ = build_joint_student(config, teacher.encoder)
    batch = FakeData().dev[0]
    loss, parts = JointLoss(config, None, teacher.encoder.num_parameters())(student.eval(), batch)
    per_utterance = student.asr(batch)
    assert torch.allclose(loss, per_utterance * len(batch) / batch.token_lengths.sum())


def test_config_keeps_the_recovery_inside_the_budget_and_output_kd_for_the_finetuned_teacher():
    tiny = JointConfig.for_profile("tiny", "kd+l0", 0.2)
    assert tiny.pruning_steps + tiny.recovery_steps == tiny.steps == 6  # the profile's student_rnnt_steps
    assert (tiny.kd_source, tiny.distill.output_weight) == ("ssl", 0.0)
    assert JointConfig.for_profile("tiny", "kd", 0.2, kd_source="finetuned").distill.output_weight == 1.0
    with pytest.raises(ValueError, match="recovery_steps .6. must be fewer than steps .6."):
        _config("lrf", steps=6, recovery_steps=6)
    with pytest.raises(ValueError, match="output_weight must be 0 with kd_source 'ssl'"):
        _config("kd", distill=DistillationConfig(1.0, 1.0))
    with pytest.raises(ValueError, match="kd_source must be one of"):
        _config("kd", kd_source="teacher")


def test_a_complete_run_is_reused_and_an_interrupted_one_resumes_exactly(teacher, tmp_path):
    # kd+lrf: a gated method resumes too, but not bit for bit (see HardConcreteGate: the gates' own
    # noise generators are not in state_dict, so their noise restarts from the seed)
    config = _config("kd+lrf", steps=4, checkpoint_every=2)
    first = run_joint(config, teacher.encoder, FakeData(), tmp_path / "a", device="cpu", progress=False)
    again = run_joint(config, teacher.encoder, FakeData(), tmp_path / "a", device="cpu", progress=False)
    assert again.student is None and again.metrics == first.metrics and again.config == config
    with pytest.raises(KeyboardInterrupt):
        # 2 CTC + 2 joint steps done, then interrupted in the recovery
        run_joint(config, teacher.encoder, FakeData(fail_after=5), tmp_path / "b", device="cpu", progress=False)
    assert not (tmp_path / "b" / "result.json").exists()
    resumed = run_joint(config, teacher.encoder, FakeData(), tmp_path / "b", device="cpu", progress=False)
    assert resumed.history == first.history and resumed.recovery_history == first.recovery_history
    batch = FakeData().dev[0]
    assert torch.equal(_logits(resumed.model, batch), _logits(first.model, batch))


def test_the_lagrangian_drives_kd_l0_to_the_target_sparsity(teacher, tmp_path):
    # per token the task loss holds the gates open less than a per-utterance sum did: λ must move faster
    # (0.03 ended at 0.41 here, still overshooting; 0.1 comes back onto the target within the run)
    config = _config("kd+l0", steps=150, recovery_steps=0, warmup_fraction=0.1, lagrangian_lr=0.1, record_every=10)
    result = run_joint(config, teacher.encoder, FakeData(), tmp_path, device="cpu", progress=False)
    records = result.history.of("record")
    assert records[0]["materialised_sparsity"] < 0.05 and records[0]["lambda1"] != 0.0
    assert records[-1]["target_sparsity"] == 0.3
    # On random data the multipliers overshoot a little (see the report): ±0.08 here, not ±0.03.
    assert abs(result.metrics["achieved_sparsity"] - 0.3) <= 0.08, result.metrics["achieved_sparsity"]
    assert abs(records[-1]["materialised_sparsity"] - result.metrics["achieved_sparsity"]) <= 1e-3


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A KDLAB_HOME with an empty runs/ and the shared tiny corpus (and its feature cache)."""
    corpus = ensure_corpus("tiny", progress=False)
    (tmp_path / "data" / "cache" / "features").mkdir(parents=True)
    os.symlink(corpus, tmp_path / "data" / "cache" / corpus.name)
    features = data_cache() / "features" / corpus.name
    features.mkdir(parents=True, exist_ok=True)
    os.symlink(features, tmp_path / "data" / "cache" / "features" / corpus.name)
    monkeypatch.setenv("KDLAB_HOME", str(tmp_path))
    return tmp_path


def test_cli_runs_the_tiny_profile_beside_its_teacher(home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "joint",
                "--method",
                "kd+l0",
                "--target-sparsity",
                "0.2",
                "--profile",
                "tiny",
                "--steps",
                "3",
                "--recovery-steps",
                "1",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    (run_dir,) = (home / "runs").glob("teacher-tiny-*/joint-offline-kd+l0-0.2-*")
    assert f"run dir:        {run_dir}" in out.out and "test greedy:" in out.out
    assert (run_dir / "result.json").is_file() and (run_dir / "recovery" / "history.json").is_file()
    assert compression_args.METHODS == METHODS


def test_cli_rejects_a_bad_sparsity_before_any_training(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["joint", "--method", "kd+l0", "--target-sparsity", "1.5", "--profile", "tiny"])
    assert exit_info.value.code == 2
    assert "argument --target-sparsity: must be in [0, 1), got 1.5" in capsys.readouterr().err
