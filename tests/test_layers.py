"""Imports go down the layers of ``docs/architecture.md`` and kdlab modules import each other in
no cycle (every import statement of every module, those inside functions included)."""

from __future__ import annotations

from functools import cache

from kdlab_tree import ARCHITECTURE, Import, kdlab_imports, layer_of, layer_table, module_files


def upward_imports(imports: list[Import], table: dict[str, int]) -> list[str]:
    """One line per import of a higher layer: where, which module, and both layers (modules
    without a layer are left to ``test_every_module_has_a_layer``)."""
    layers = [(i, layer_of(i.module, table), layer_of(i.target, table)) for i in imports]
    upward = [(i, low, high) for i, low, high in layers if None not in (low, high) and high > low]
    return [f"{i} (layer {low} imports layer {high})" for i, low, high in upward]


def package_of(module: str) -> str:
    """``kdlab.x`` of ``kdlab.x.y.z`` (a top-level module is its own package)."""
    return ".".join(module.split(".")[:2])


def import_cycles(imports: list[Import], unit=lambda module: module) -> list[list[Import]]:
    """One cycle per group of units (modules, or with ``unit=package_of`` packages) that import each
    other in a circle, as the imports that close it, in order (one import stands for each pair)."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports:
        if unit(i.module) != unit(i.target):
            edges.setdefault(unit(i.module), {}).setdefault(unit(i.target), i)
    cycles, seen = [], set()

    def walk(path: list[Import], node: str, start: str, visited: set[str]) -> list[Import] | None:
        for target, step in edges.get(node, {}).items():
            if target == start:
                return [*path, step]
            if target not in visited:
                visited.add(target)
                found = walk([*path, step], target, start, visited)
                if found:
                    return found
        return None

    for start in sorted(edges):
        cycle = None if start in seen else walk([], start, start, {start})
        if cycle:
            cycles.append(cycle)
            seen.update(unit(step.module) for step in cycle)
    return cycles


def _cycles_text(cycles: list[list[Import]]) -> str:
    return "\n".join(" -> ".join(map(str, cycle)) for cycle in cycles)


@cache
def tree_imports() -> list[Import]:
    """The kdlab imports of the checkout's tree, parsed once for the tests below."""
    return kdlab_imports(module_files())


def test_every_module_has_a_layer():
    table = layer_table(ARCHITECTURE.read_text())
    missing = [m for m in module_files() if layer_of(m, table) is None]
    assert not missing, f"no layer in {ARCHITECTURE.name}'s table for: {', '.join(missing)}"


def test_no_module_imports_a_higher_layer():
    problems = upward_imports(tree_imports(), layer_table(ARCHITECTURE.read_text()))
    assert not problems, "imports of a higher layer:\n" + "\n".join(problems)


def test_kdlab_modules_import_each_other_in_no_cycle():
    cycles = import_cycles(tree_imports())
    assert not cycles, "import cycles between modules:\n" + _cycles_text(cycles)


def test_kdlab_packages_import_each_other_in_no_cycle():
    """Also within a layer (``lessons``, ``viz`` and ``report`` share one): data flows one way."""
    cycles = import_cycles(tree_imports(), unit=package_of)
    assert not cycles, "import cycles between packages:\n" + _cycles_text(cycles)


def _write(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_checks_name_an_upward_import_inside_a_function_and_the_cycles(tmp_path):
    _write(
        tmp_path,
        {
            "kdlab/__init__.py": "",
            "kdlab/data/__init__.py": "",
            "kdlab/data/low.py": "import os\n\n\ndef f():\n    from kdlab.viz import high\n",
            "kdlab/viz/__init__.py": "",
            "kdlab/viz/high.py": "from kdlab.data.low import f\nfrom . import other\n",
            "kdlab/viz/other.py": "import kdlab.viz.high\n",
        },
    )
    imports = kdlab_imports(module_files(tmp_path / "kdlab"))
    table = layer_table("## Layers\n| 0 | `kdlab` |\n| 1 | `kdlab.data` |\n| 6 | `kdlab.viz` |\n")
    assert upward_imports(imports, table) == ["kdlab/data/low.py:5 imports kdlab.viz.high (layer 1 imports layer 6)"]
    cycles = [[str(step) for step in cycle] for cycle in import_cycles(imports)]
    assert cycles == [
        ["kdlab/data/low.py:5 imports kdlab.viz.high", "kdlab/viz/high.py:1 imports kdlab.data.low"],
        ["kdlab/viz/other.py:1 imports kdlab.viz.high", "kdlab/viz/high.py:2 imports kdlab.viz.other"],
    ]
    assert layer_of("kdlab.viz.high", table) == 6 and layer_of("kdlab.other", table) is None
    packages = [[str(step) for step in cycle] for cycle in import_cycles(imports, unit=package_of)]
    assert packages == [["kdlab/data/low.py:5 imports kdlab.viz.high", "kdlab/viz/high.py:1 imports kdlab.data.low"]]
