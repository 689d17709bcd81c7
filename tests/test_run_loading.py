"""One loader of run folders (``runs.load_run``) and one of ``asr.pt`` (``runs.load_asr``), which
reads both stored formats: a dense teacher's encoder config and a materialised student's spec."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_asr import tiny_compressed_asr

from kdlab.data.tokenizer import CharTokenizer
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.recipes.compress_config import CompressConfig
from kdlab.train.recipes.runs import load_asr, load_run, save_student_asr, write_result


def _outputs(model: RNNTModel) -> torch.Tensor:
    features = torch.randn(1, 40, model.encoder.config.input_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.encoder(features, torch.tensor([40]))[0]


def test_load_asr_reads_the_dense_teacher_format_and_the_materialised_student_format(tmp_path):
    torch.manual_seed(0)
    rnnt = RNNTConfig(vocab_size=CharTokenizer().vocab_size, pred_embed_dim=8, pred_hidden=8, joint_dim=8)
    dense = RNNTModel(ConformerEncoder(teacher_config("tiny", dropout=0.0)), rnnt).eval()
    torch.save(  # the format run_finetune writes
        {
            "encoder_config": dense.encoder.config.to_dict(),
            "rnnt_config": rnnt.to_dict(),
            "tokenizer": CharTokenizer().to_dict(),
            "model": dense.state_dict(),
        },
        tmp_path / "dense.pt",
    )
    student = tiny_compressed_asr()
    save_student_asr(student, CharTokenizer(), tmp_path / "student.pt")
    for model, name in ((dense, "dense.pt"), (student, "student.pt")):
        loaded, tokenizer = load_asr(tmp_path / name)
        assert not loaded.training and tokenizer.decode(tokenizer.encode("a b")) == "a b"
        assert torch.equal(_outputs(loaded), _outputs(model))


def test_load_run_returns_the_config_section_and_result_and_refuses_an_unfinished_run(tmp_path):
    config = CompressConfig(method="l0", target_sparsity=0.3, seed=2)
    (tmp_path / "config.json").write_text(json.dumps({"compress": config.to_dict()}))
    with pytest.raises(FileNotFoundError, match="no completed compress run.*run `python -m kdlab compress`"):
        load_run(tmp_path, "compress", CompressConfig, "`python -m kdlab compress`")
    write_result(tmp_path, {"steps": 4})
    run_dir, loaded, metrics = load_run(tmp_path, "compress", CompressConfig, "`python -m kdlab compress`")
    assert (run_dir, loaded, metrics) == (tmp_path, config, {"steps": 4})
