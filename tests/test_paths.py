"""Where generated things go and where the lessons are, in a checkout and in an installed package."""

from __future__ import annotations

from pathlib import Path

from kdlab import paths
from kdlab.cli import main


def test_home_is_the_checkout_here_and_kdlab_in_the_home_folder_when_installed(tmp_path, monkeypatch):
    monkeypatch.delenv("KDLAB_HOME", raising=False)
    assert paths.running_from_checkout() and paths.home() == paths.PROJECT_ROOT
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "site-packages")  # no pyproject.toml beside the package
    assert not paths.running_from_checkout()
    assert paths.home() == Path("~/kdlab").expanduser()
    monkeypatch.setenv("KDLAB_HOME", str(tmp_path / "elsewhere"))
    assert paths.outputs_dir() == tmp_path / "elsewhere" / "outputs"


def test_lessons_are_found_through_the_package():
    lessons = sorted(p.name for p in paths.notebooks_dir().glob("*.ipynb"))
    assert lessons == sorted(p.name for p in (paths.PROJECT_ROOT / "notebooks").glob("*.ipynb")) and lessons


def test_notebooks_copy_writes_the_lessons_and_keeps_files_already_there(tmp_path, capsys):
    target = tmp_path / "lessons"
    target.mkdir()
    (target / "00_corpus.ipynb").write_text("my edited copy")
    try:
        main(["notebooks", "--copy", str(target), "--only", "00", "03"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert (target / "00_corpus.ipynb").read_text() == "my edited copy"
    assert (target / "03_l0_pruning.ipynb").read_bytes() == (paths.notebooks_dir() / "03_l0_pruning.ipynb").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["00_corpus.ipynb", "03_l0_pruning.ipynb"]
    assert "kept 1 already there: 00_corpus.ipynb" in capsys.readouterr().out
