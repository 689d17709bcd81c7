"""Both compression routes describe their student with one ``StudentSpec``: the same fields, checks
and student, and config.json keeps the flat keys runs were stored with."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from kdlab.compress.structures import L0Config
from kdlab.models.conformer import ConformerConfig, ConformerEncoder
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.compress_student import build_student
from kdlab.train.recipes.joint_config import JointConfig
from kdlab.train.recipes.student_spec import StudentSpec

SPEC = dict(
    method="kd+lrf+l0",
    target_sparsity=0.4,
    seed=3,
    l0=L0Config(ffn_units_keep_prob=0.8),
    lrf_sparsity=0.1,
    student_shape="shallow",
    student_init="random",
)


def test_both_configs_take_every_student_field_from_the_spec_and_define_none_twice():
    spec_fields = [f.name for f in fields(StudentSpec)]
    for config in (CompressConfig, JointConfig):
        names = [f.name for f in fields(config)]
        assert names[: len(spec_fields)] == spec_fields and len(set(names)) == len(names)
        for f in fields(config)[: len(spec_fields)]:
            assert f.type == next(g.type for g in fields(StudentSpec) if g.name == f.name)


@pytest.mark.parametrize(
    "bad",
    [{"method": "kd+x"}, {"target_sparsity": 1.0}, {"lrf_method": "svd"}, {"student_shape": "wide"}],
)
def test_both_configs_refuse_a_bad_student_with_the_spec_message(bad):
    with pytest.raises(ValueError) as spec_error:
        StudentSpec(**bad)
    for config in (CompressConfig, JointConfig):
        with pytest.raises(ValueError) as error:
            config(**bad)
        assert str(error.value) == str(spec_error.value)


def test_the_same_spec_builds_the_same_student_from_either_route():
    torch.manual_seed(0)
    teacher = ConformerEncoder(ConformerConfig(d_model=32, num_layers=2, num_heads=2, head_dim=16, ffn_dim=64))
    built = [build_student(c(**SPEC), teacher) for c in (StudentSpec, CompressConfig, JointConfig)]
    assert built[0].gates.kinds and all(b.gates.kinds == built[0].gates.kinds for b in built)
    for b in built[1:]:
        assert b.info == built[0].info
        for (name, p), (_, q) in zip(built[0].encoder.state_dict().items(), b.encoder.state_dict().items()):
            assert torch.equal(p, q), name


def test_the_student_fields_stay_top_level_keys_of_config_json():
    for config in (CompressConfig(**SPEC), JointConfig(**SPEC)):
        stored = config.to_dict()
        assert {k: stored[k] for k in ("method", "lrf_sparsity", "student_shape")} == {
            "method": "kd+lrf+l0",
            "lrf_sparsity": 0.1,
            "student_shape": "shallow",
        }
        assert stored["l0"]["seed"] == 3 and type(config).from_dict(stored) == config
