"""``docs/architecture.md`` describes the tree as it is: every package has a row in its Packages
table, every module is named in its package's row (``*.py``: all of them), and every file,
folder and dotted kdlab name the doc gives exists."""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

from kdlab_tree import ARCHITECTURE, PACKAGE, module_files


def package_rows(text: str) -> dict[str, str]:
    """{package folder relative to the checkout, e.g. "kdlab/data/": the rest of its table row}."""
    section = text.split("## Packages", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(kdlab/[\w/]*)` \|(.*)\|$", section, flags=re.MULTILINE))


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def doc_problems(text: str, package: Path = PACKAGE) -> list[str]:
    """What the doc and the tree under ``package`` disagree on, one line each."""
    root, modules = package.parent, module_files(package)
    rows = package_rows(text)
    problems = [f"no package folder {folder}" for folder in rows if not (root / folder / "__init__.py").is_file()]
    folders = {f"{p.parent.relative_to(root).as_posix()}/" for p in package.rglob("__init__.py")}
    problems += [f"package {folder} has no row in the Packages table" for folder in sorted(folders - set(rows))]
    for folder, row in rows.items():
        named = re.findall(r"`([\w*]+\.py)`", row)
        files = [p.name for p in (root / folder).glob("*.py")]
        problems += [f"{folder}: `{name}` names no file" for name in named if not any(fnmatch(f, name) for f in files)]
        unnamed = [f for f in files if f != "__init__.py" and not any(fnmatch(f, name) for name in named)]
        problems += [f"{folder}{f} is not named in its package's row" for f in sorted(unnamed)]
    for path in dict.fromkeys(re.findall(r"`(kdlab/[\w/.]*)`", text)):
        if path not in rows and not (root / path).exists():
            problems.append(f"`{path}` does not exist")
    for dotted in dict.fromkeys(re.findall(r"`(kdlab(?:\.\w+)*)", text)):
        parts = dotted.split(".")
        module = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)
        rest = parts[len(module.split(".")) :] if module else parts
        if module is None or len(rest) > 1 or (rest and rest[0] not in _top_level_names(modules[module])):
            problems.append(f"`{dotted}` is no kdlab module (or name in one)")
    return problems


def test_the_architecture_doc_matches_the_tree():
    problems = doc_problems(ARCHITECTURE.read_text())
    assert not problems, f"{ARCHITECTURE.name} and the tree disagree:\n" + "\n".join(problems)


def test_the_doc_check_names_missing_files_unnamed_modules_and_unknown_names(tmp_path):
    tree = ["kdlab/__init__.py", "kdlab/cli.py", "kdlab/extra.py", "kdlab/data/__init__.py", "kdlab/data/io.py"]
    for name in [*tree, "kdlab/x/__init__.py"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("VALUE = 1\n")
    (tmp_path / "kdlab/data/old.txt").write_text("")
    text = (
        "## Packages\n| package | files |\n| --- | --- |\n| `kdlab/` | `cli.py`, `gone.py` |\n"
        "| `kdlab/data/` | `*.py` |\n| `kdlab/eval/` | `wer.py` |\n## Contracts\n"
        "`kdlab.data.io.VALUE`, `kdlab.data.io.missing`, `kdlab.data.gone`, `kdlab/data/old.txt`, `kdlab/y/`\n"
    )
    assert doc_problems(text, tmp_path / "kdlab") == [
        "no package folder kdlab/eval/",
        "package kdlab/x/ has no row in the Packages table",
        "kdlab/: `gone.py` names no file",
        "kdlab/extra.py is not named in its package's row",
        "kdlab/eval/: `wer.py` names no file",
        "`kdlab/y/` does not exist",
        "`kdlab.data.io.missing` is no kdlab module (or name in one)",
        "`kdlab.data.gone` is no kdlab module (or name in one)",
    ]
