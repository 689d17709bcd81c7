"""A tiny compressed RNN-T model (pruned branches, low-rank layers, materialised), a run folder
holding it, and such runs exported to ONNX where `kdlab transcribe --runtime onnx` keeps them, for
the deployment tests (export, ONNX Runtime, transcribe; tests/conftest.py shares one offline and one
streaming export per test session)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kdlab.compress.factorise import factorise_encoder
from kdlab.compress.materialise import materialise
from kdlab.data.features import GlobalCMVN
from kdlab.data.tokenizer import CharTokenizer
from kdlab.deploy.onnx_export import ExportReport, export_onnx
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.rnnt import BLANK, RNNTConfig, RNNTModel
from kdlab.train.recipes.runs import save_student_asr, write_result

#: Block 0 keeps one head and a narrower FFN; block 1 lost its attention and its first FFN.
LAYER_DIMS = [{"num_heads": 1, "ffn1_dim": 48}, {"num_heads": 0, "ffn1_dim": 0}]


def tiny_compressed_asr(
    streaming: bool = False,
    left_chunks: int = -1,
    seed: int = 0,
    subsampling_factor: int = 4,
    half_rate_blocks: list[int] | None = None,
) -> RNNTModel:
    """Random weights (seeded), eval mode; the blank is discouraged so greedy search emits symbols."""
    torch.manual_seed(seed)
    config = teacher_config(
        "tiny",
        dropout=0.0,
        streaming=streaming,
        chunk_size=4,
        left_chunks=left_chunks,
        layer_dims=LAYER_DIMS,
        subsampling_factor=subsampling_factor,
        half_rate_blocks=half_rate_blocks,
    )
    encoder = ConformerEncoder(config)
    for block in encoder.blocks:  # batch-norm statistics as after training, not the identity
        block.conv.batch_norm.running_mean.uniform_(-0.5, 0.5)
        block.conv.batch_norm.running_var.uniform_(0.5, 2.0)
    factorise_encoder(encoder, method="energy", energy=0.7)
    rnnt = RNNTConfig(
        vocab_size=CharTokenizer().vocab_size, pred_embed_dim=16, pred_hidden=24, joint_dim=20, dropout=0.0
    )
    model = RNNTModel(materialise(encoder.eval()), rnnt).eval()
    with torch.no_grad():
        model.joiner.out.bias[BLANK] -= 2.0
    return model


def write_run_folder(run_dir: Path, model: RNNTModel, cmvn: GlobalCMVN) -> Path:
    """A finished run folder as the joint and sequential recipes leave it (asr.pt, cmvn.json, result.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_student_asr(model, CharTokenizer(), run_dir / "asr.pt")
    cmvn.save(run_dir / "cmvn.json")
    write_result(run_dir, {"stand_in": True})
    return run_dir


@dataclass(frozen=True)
class ExportedRun:
    """A run folder of a tiny model and its ONNX export at ``RUN_DIR/onnx/model-{mode}.onnx`` (the
    transcriber's place, so `kdlab transcribe --runtime onnx` reuses it), written either by
    ``export_onnx`` (``report``: its ``ExportReport``) or by `kdlab export` (``printed``: its stdout)."""

    model: RNNTModel
    run_dir: Path
    onnx: Path
    report: ExportReport | None = None
    printed: str = ""


def exported_offline_run(root: Path, cmvn: GlobalCMVN) -> ExportedRun:
    """``tiny_compressed_asr()`` in a run folder under `root`, exported offline by ``export_onnx``."""
    from kdlab.deploy.transcribe import onnx_export_path

    model = tiny_compressed_asr(streaming=False)
    run_dir = write_run_folder(root / "run", model, cmvn)
    path = onnx_export_path(run_dir, streaming=False)
    report = export_onnx(model, path, tokenizer=CharTokenizer(), cmvn=cmvn)
    return ExportedRun(model, run_dir, path, report=report)


def exported_streaming_run(root: Path, cmvn: GlobalCMVN) -> ExportedRun:
    """A streaming tiny model carrying one chunk of left context in a run folder under `root`,
    exported as a chunk step by `kdlab export RUN_DIR --streaming --out RUN_DIR/onnx/...`."""
    from kdlab.cli import main
    from kdlab.deploy.transcribe import onnx_export_path

    model = tiny_compressed_asr(streaming=True, left_chunks=1, seed=1)
    run_dir = write_run_folder(root / "run", model, cmvn)
    path = onnx_export_path(run_dir, streaming=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--format", "onnx", "--streaming", "--out", str(path)])
    assert exit_info.value.code == 0, printed.getvalue()
    return ExportedRun(model, run_dir, path, printed=printed.getvalue())
