"""The kdlab source tree as the structure tests read it: its modules, the kdlab modules each one
imports (by ``ast``, imports inside functions included), and the layer table of
``docs/architecture.md``."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
PACKAGE = CHECKOUT / "kdlab"
ARCHITECTURE = CHECKOUT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Import:
    """``module`` (in ``path``) imports kdlab module ``target`` at ``line``."""

    module: str
    path: Path
    line: int
    target: str

    def __str__(self) -> str:
        depth = len(self.module.split(".")) - (self.path.name != "__init__.py")
        return f"{self.path.relative_to(self.path.parents[depth])}:{self.line} imports {self.target}"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every ``.py`` under ``package`` (``__init__.py`` is the package)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = (package.name, *path.relative_to(package).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a module's attribute) starts with."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name if name in modules else None


def kdlab_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of a module of ``modules`` by a module of ``modules`` (self-imports left out)."""
    found = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in dict.fromkeys(_resolve(name, modules) for name in names):
                if target is not None and target != module:
                    found.append(Import(module, path, node.lineno, target))
    return found


def layer_table(text: str) -> dict[str, int]:
    """{package or module: layer} from the ``## Layers`` table of the architecture doc
    (rows ``| <layer> | `kdlab.x`, `kdlab.y` ... |``)."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for layer, cells in re.findall(r"^\| (\d+) \|(.*)\|$", section, flags=re.MULTILINE):
        for name in re.findall(r"`(kdlab[\w.]*)`", cells):
            table.setdefault(name, int(layer))
    return table


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the most specific table entry covering ``module``: the entry itself or a
    package above it; the root package covers only itself."""
    root = module.split(".")[0]
    entries = [e for e in table if module == e or (e != root and module.startswith(e + "."))]
    return table[max(entries, key=len)] if entries else None
