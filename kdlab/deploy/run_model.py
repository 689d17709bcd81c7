"""The ASR model of a finished run folder, with what turns audio into its input (CMVN, tokenizer).

Any run that ends in an RNN-T model works: a teacher fine-tune (``asr.pt`` with a dense encoder),
a sequential fine-tune or a joint run (``asr.pt`` with a materialised encoder). A run folder of
a task-agnostic compression has no ASR head: its sequential fine-tune is the one to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdlab.data.features import GlobalCMVN
from kdlab.models.rnnt import RNNTModel
from kdlab.train.recipes.runs import load_asr, read_result


@dataclass
class RunModel:
    """A run's RNN-T model (eval, CPU), tokenizer and the CMVN its features were normalised with."""

    run_dir: Path
    model: RNNTModel
    tokenizer: object
    cmvn: GlobalCMVN

    @property
    def streaming(self) -> bool:
        return bool(self.model.encoder.config.streaming)


def load_run_model(run_dir: str | Path) -> RunModel:
    """Load the model of a finished run folder; errors name what is missing and what to do."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder: give a run folder under runs/ (one with asr.pt)")
    if read_result(run_dir) is None:
        raise FileNotFoundError(
            f"{run_dir} holds no finished run (no result.json): let the run finish, or re-run its command to resume it"
        )
    path = run_dir / "asr.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no ASR model (asr.pt): give a fine-tune, sequential or joint run; "
            "a task-agnostic compression run is fine-tuned by the sequential route first"
        )
    model, tokenizer = load_asr(path)
    return RunModel(run_dir, model.eval(), tokenizer, GlobalCMVN.load(run_dir / "cmvn.json"))
