"""Every per-profile value is defined once, in ``kdlab/train/recipes/profiles.py``: no other module
maps the recipe profile names to values (a dict keyed by them, ``dict(tiny=...)``, or a value chosen
by comparing a profile to a name)."""

from __future__ import annotations

import ast
from pathlib import Path

from kdlab.train.recipes.profiles import PROFILES

PACKAGE = Path(__file__).resolve().parents[1] / "kdlab"
NAMES = frozenset(PROFILES)
#: Presets of the lower layers, which cannot import the profiles module: a ``RecipeProfile`` picks
#: them by name (``corpus_profile``, ``encoder_size``), and their names happen to be profile names.
LOWER_LAYER_PRESETS = {"data/corpus.py", "models/conformer.py"}


def _profile_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in NAMES


def profile_tables(tree: ast.AST) -> list[int]:
    """Lines where `tree` maps profile names to values: a dict literal with two or more profile-name
    keys, a ``dict(...)`` call with two or more profile-name keywords, or ``a if p == "tiny" else b``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and sum(_profile_name(k) for k in node.keys if k is not None) >= 2:
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
            and sum(k.arg in NAMES for k in node.keywords) >= 2
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare):
            if any(_profile_name(n) for n in (node.test.left, *node.test.comparators)):
                lines.append(node.lineno)
    return lines


def test_a_profile_table_is_found_in_each_form_it_can_take():
    source = 'A = {"tiny": 1, "default": 2}\nB = dict(tiny=1, full=3)\nC = 4 if profile == "tiny" else 5\n'
    assert profile_tables(ast.parse(source)) == [1, 2, 3]
    assert profile_tables(ast.parse('A = {"default": 1, "other": 2}\nB = dict(tiny=1)\n')) == []


def test_only_the_profiles_module_maps_profile_names_to_values():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in {"train/recipes/profiles.py", *LOWER_LAYER_PRESETS}:
            continue
        found += [f"kdlab/{name}:{line}" for line in profile_tables(ast.parse(path.read_text()))]
    assert found == [], f"per-profile values outside kdlab/train/recipes/profiles.py: {found}"


def test_the_profiles_module_holds_one_table_of_profiles():
    tree = ast.parse((PACKAGE / "train/recipes/profiles.py").read_text())
    assert len(profile_tables(tree)) == 1
