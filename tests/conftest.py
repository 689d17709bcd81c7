"""What several test files share: runs built once per test session, a browser per module, and the
pytest-xdist scheduling that keeps the files sharing a session fixture in one worker process.

`make test` runs the suite in pytest-xdist workers with ``--dist loadfile``: a file runs whole in
one worker. The files of ``SHARED_GROUPS`` are one work unit instead: they run one after the
other in one worker, whose session fixture builds what they share once. (pytest-xdist's own
``xdist_group`` marks do nothing under pytest 9: the worker rewrites a node id attribute pytest no
longer reads, so the grouping is done here, in the scheduler.)
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from jupyterlab_pages import chromium_context
from tiny_grid import TinyGrid, build_tiny_grid

#: File name -> its work unit, for files sharing a session fixture (others: a unit of their own).
SHARED_GROUPS = {
    "test_study.py": "tiny_grid",  # checks the grid
    "test_notebooks_joint_study.py": "tiny_grid",  # notebooks 05 and 06 on its runs
}


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the files of ``SHARED_GROUPS`` in one work unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return SHARED_GROUPS.get(PurePosixPath(file).name, file)

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
