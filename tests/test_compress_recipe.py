"""Compression recipes (kd, l0, lrf and combinations) and `python -m kdlab compress`.

The teacher is a tiny conformer with 20-dim input features (the "tiny" preset otherwise): with
80-dim features the fixed subsampling front-end alone holds almost half of the tiny encoder, so
no structured method could remove 50 % of it; at 20 dims the prunable blocks dominate, as in the
real encoders. Data: two fixed synthetic batches (random teacher, random features). The recipe
gets the BEST-RQ model around the teacher (``ssl``): its objective is the loss of every method,
layer KD from the teacher is added by the kd methods.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kdlab.cli import main
from kdlab.commands import _compression_args as compression_args
from kdlab.compress.kd_losses import DistillationConfig
from kdlab.compress.lowrank import LowRankLinear
from kdlab.compress.materialise import load_compressed
from kdlab.compress.structures import GateSet
from kdlab.data.batching import Batch
from kdlab.models.bestrq import BestRQConfig, BestRQModel
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.train.recipes.compress import COMPRESSED, layer_map, run_compress
from kdlab.train.recipes.compress_config import CompressConfig, config_params, dense_student_config
from kdlab.train.recipes.compress_student import init_from_teacher
from kdlab.train.recipes.student_spec import METHODS
from kdlab.train.recipes.student_start import weights_digest

torch.set_num_threads(1)
FEATURES = 20


@pytest.fixture(scope="module")
def teacher() -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(teacher_config("tiny", input_dim=FEATURES, dropout=0.0)).eval()


@pytest.fixture(scope="module")
def ssl(teacher) -> BestRQModel:
    """The teacher inside a BEST-RQ model (random head and quantiser: the objective's numbers do not matter here)."""
    return BestRQModel(teacher, BestRQConfig(codebook_size=16, codebook_dim=8), input_dim=FEATURES).eval()


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for i in range(2):
        features = torch.randn(4, 100, FEATURES, generator=generator)
        out.append(
            Batch(
                features,
                torch.tensor([100, 90, 80, 100]),
                torch.ones(4, 1, dtype=torch.long),
                torch.ones(4, dtype=torch.long),
                [""] * 4,
                [f"{i}-{j}" for j in range(4)],
            )
        )
    return out


def _config(method: str, target: float, steps: int, **overrides) -> CompressConfig:
    return CompressConfig(
        method=method, target_sparsity=target, profile="tiny", steps=steps, lr=2e-3, latency_seconds=0.5, **overrides
    )


def _outputs(encoder: ConformerEncoder, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval()(batch.features, batch.feature_lengths)[0]


def _check_run(result, teacher, batches) -> None:
    """Materialised model = result.json counts = gated model's outputs; history records well shaped."""
    loaded = load_compressed(result.run_dir / COMPRESSED)
    assert loaded.num_parameters() == result.metrics["params"] == result.encoder.num_parameters()
    assert result.metrics["teacher_params"] == teacher.num_parameters()
    assert result.metrics["achieved_sparsity"] == pytest.approx(1 - loaded.num_parameters() / teacher.num_parameters())
    for batch in batches:
        gated = _outputs(result.student, batch)
        assert (gated - _outputs(loaded, batch)).abs().max() <= 1e-5
    records = result.history.of("record")
    assert records and records[-1]["step"] == result.config.steps
    gates = GateSet.from_encoder(result.student)
    for record in records:
        assert {name: len(p) for name, p in record.get("gates", {}).items()} == {n: g.n for n, g in gates.gates.items()}
    ranks = {n: m for n, m in result.student.named_modules() if isinstance(m, LowRankLinear)}
    assert set(records[-1].get("ranks", {})) == set(ranks)
    for name, layer in ranks.items():
        assert 0 <= records[-1]["ranks"][name] <= layer.rank
    train = result.history.of("train")
    assert all(r["loss_ssl"] > 0 for r in train)  # the SSL objective, in every method
    distils = "kd" in result.config.method.split("+")
    assert all(("loss_distill" in r) == distils for r in train)  # layer KD only in the kd methods
    assert result.metrics["ssl_encoder_digest"] == weights_digest(teacher)


def test_l0_with_kd_reaches_target_sparsity_of_the_materialised_model(ssl, teacher, batches, tmp_path):
    result = run_compress(_config("kd+l0", 0.5, 300), ssl, batches, tmp_path, device="cpu", progress=False)
    _check_run(result, teacher, batches)
    real = 1 - load_compressed(tmp_path / COMPRESSED).num_parameters() / teacher.num_parameters()
    assert abs(real - 0.5) <= 0.03, real
    records = result.history.of("record")
    assert records[-1]["target_sparsity"] == 0.5
    assert abs(records[-1]["expected_sparsity"] - 0.5) <= 0.03
    assert records[0]["target_sparsity"] < 0.1 and records[0]["lambda1"] != 0.0  # ramp starts at 0, λ moves
    assert result.history.last("train")["loss_penalty"] is not None


@pytest.mark.parametrize("method", [m for m in METHODS if m != "kd+l0"])
def test_every_method_materialises_a_model_equal_to_the_trained_one(method, ssl, teacher, batches, tmp_path):
    result = run_compress(_config(method, 0.3, 25), ssl, batches, tmp_path, device="cpu", progress=False)
    _check_run(result, teacher, batches)
    if method == "kd":
        assert result.encoder.config.num_layers == teacher.config.num_layers  # "deep" student by default
        assert abs(result.metrics["achieved_sparsity"] - 0.3) <= 0.03
    if method in ("lrf", "kd+lrf"):  # factorised to the global budget, nothing else changes the count
        assert 0.3 <= result.metrics["achieved_sparsity"] <= 0.33
        assert result.metrics["factorisation"]["params_after"] == result.metrics["params"]
    if method == "kd+lrf+l0":
        assert result.metrics["factorisation_sparsity"] == 0.15  # half the target; the gates do the rest
        low_rank = {n for n, m in result.student.named_modules() if isinstance(m, LowRankLinear)}
        assert low_rank and low_rank <= set(result.history.of("record")[-1]["gates"])  # rank gates


def test_a_complete_run_folder_is_reused(ssl, batches, tmp_path):
    config = _config("kd", 0.3, 3)
    first = run_compress(config, ssl, batches, tmp_path, device="cpu", progress=False)
    again = run_compress(config, ssl, batches, tmp_path, device="cpu", progress=False)
    assert again.student is None and again.metrics == first.metrics and again.config.to_dict() == config.to_dict()
    assert (_outputs(again.encoder, batches[0]) == _outputs(first.encoder, batches[0])).all()


@pytest.mark.parametrize("shape", ["deep", "shallow"])
def test_dense_student_meets_the_budget(shape, teacher):
    student = dense_student_config(teacher.config, 0.5, shape)
    assert abs(student.sparsity - 0.5) <= 0.03
    assert student.params == config_params(student.config) == ConformerEncoder(student.config).num_parameters()
    assert student.config.d_model == teacher.config.d_model
    if shape == "deep":
        assert student.config.num_layers == teacher.config.num_layers
    else:
        assert student.config.num_layers < teacher.config.num_layers and student.config.num_heads == 2
    with pytest.raises(ValueError, match="no deep dense student reaches sparsity 0.9"):
        dense_student_config(teacher_config("tiny"), 0.9)


def test_teacher_init_of_a_full_size_student_copies_the_teacher(teacher, batches):
    same = ConformerEncoder(dense_student_config(teacher.config, 0.0).config)
    init_from_teacher(same, teacher)
    assert torch.allclose(_outputs(same, batches[0]), _outputs(teacher, batches[0]))
    narrow = ConformerEncoder(replace(teacher.config, conv_channels=5))
    init_from_teacher(narrow, teacher)
    rows = teacher.blocks[0].conv.pointwise1.weight
    assert torch.equal(narrow.blocks[0].conv.pointwise1.weight, torch.cat([rows[:5], rows[32:37]]))  # GLU halves


def test_layer_maps_and_config_round_trip():
    assert layer_map(_config("l0", 0.5, 1), 2, 2) == []  # no KD: no teacher, the SSL objective alone
    assert layer_map(_config("kd+l0", 0.5, 1), 2, 4) == [(1, 2), (2, 4)]
    custom = _config("kd", 0.5, 1, distill=DistillationConfig(layer_map=[(1, 3)]))
    assert layer_map(custom, 2, 4) == [(1, 3)]
    assert CompressConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="output_weight must be 0"):
        _config("kd", 0.5, 1, distill=DistillationConfig(output_weight=1.0))
    with pytest.raises(ValueError, match="method must be one of"):
        _config("pruning", 0.5, 1)
    with pytest.raises(ValueError, match="without KD the SSL objective is its only loss"):
        _config("l0", 0.5, 1, ssl_weight=0.0)
    with pytest.raises(ValueError, match="needs the BEST-RQ model"):
        run_compress(_config("lrf", 0.5, 1), ConformerEncoder(teacher_config("tiny", input_dim=FEATURES)), [], "unused")


def test_cli_rejects_a_bad_sparsity_before_any_training(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--method", "kd+l0", "--target-sparsity", "1.5", "--profile", "tiny"])
    assert exit_info.value.code == 2
    assert "argument --target-sparsity: must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert compression_args.METHODS == METHODS
