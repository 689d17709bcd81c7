"""What several test files share: runs built once per test session, a browser per module, and the
pytest-xdist scheduling that keeps the files sharing a session fixture in one worker process and
starts the longest work first.

`make test` runs the suite in pytest-xdist workers with ``--dist loadfile``: a file runs whole in
one worker. The files of ``SHARED_GROUPS`` are one work unit instead: they run one after the
other in one worker, whose session fixture builds what they share once. Units start longest first
(``LONGEST_FIRST``), so that no worker is left alone with a long file at the end. (pytest-xdist's own
``xdist_group`` marks do nothing under pytest 9: the worker rewrites a node id attribute pytest no
longer reads, so the grouping is done here, in the scheduler.)
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest
import torch
from jupyterlab_pages import chromium_context
from tiny_asr import ExportedRun, exported_offline_run, exported_streaming_run
from tiny_grid import TinyGrid, build_tiny_grid

#: File name -> its work unit, for files sharing a session fixture (others: a unit of their own).
SHARED_GROUPS = {
    "test_study.py": "tiny_grid",  # checks the grid
    "test_notebooks_joint_study.py": "tiny_grid",  # notebooks 05 and 06 on its runs
    "test_export.py": "tiny_deploy",  # ONNX export checks of the exported tiny runs
    "test_transcribe.py": "tiny_deploy",  # `kdlab transcribe` of the same runs
}
#: The work units of at least ~30 s of worker time, longest first (measured: docs/cpu_timings.md,
#: "Test workers"); the others follow.
LONGEST_FIRST = (
    "tiny_grid",
    "test_notebooks_compression.py",
    "tiny_deploy",
    "test_distributed.py",
    "test_notebooks.py",
    "test_browser.py",
    "test_resume.py",
    "test_compress_recipe.py",
    "test_corpus.py",
)


def _work_unit(nodeid: str) -> str:
    file = PurePosixPath(nodeid.split("::", 1)[0]).name
    return SHARED_GROUPS.get(file, file)


def pytest_collection_modifyitems(config, items):
    """Tests of the ``LONGEST_FIRST`` units first, in that order (stable: a file keeps its order)."""
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_work_unit(item.nodeid), len(rank)))


def pytest_configure(config):
    """In a pytest-xdist worker (``make test``: one per core), one compute thread for the worker and
    for every process it starts (kernels, study workers, torchrun ranks): a second OpenMP thread
    would only spin against the other worker's (docs/cpu_timings.md, "Test workers")."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the files of ``SHARED_GROUPS`` in one work unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return SharedFileScheduling(config, log)


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory) -> TinyGrid:
    """The study grid at profile tiny (tests/tiny_grid.py), run from nothing once per session."""
    return build_tiny_grid(tmp_path_factory.mktemp("tiny-grid-home"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium browser context (the system Chromium, headless) with a fresh profile, closed after the module."""
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="session")
def tiny_speech_data():
    """The tiny corpus (``SpeechData``) with the CMVN of its first 8 train utterances."""
    from kdlab.data.corpus import ensure_corpus
    from kdlab.train.recipes.data_setup import SpeechData

    return SpeechData.from_corpus(ensure_corpus("tiny", progress=False), cmvn_utterances=8)


@pytest.fixture(scope="session")
def offline_export(tmp_path_factory, tiny_speech_data) -> ExportedRun:
    """A tiny offline run and its ONNX export (tests/tiny_asr.py), once per session."""
    return exported_offline_run(tmp_path_factory.mktemp("offline-export"), tiny_speech_data.cmvn)


@pytest.fixture(scope="session")
def streaming_export(tmp_path_factory, tiny_speech_data) -> ExportedRun:
    """A tiny streaming run exported by `kdlab export --streaming` (tests/tiny_asr.py), once per session."""
    return exported_streaming_run(tmp_path_factory.mktemp("streaming-export"), tiny_speech_data.cmvn)
