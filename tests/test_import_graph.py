"""The package's imports form no cycle and point one way: plugin -> train -> model.

Read from the source (every import, inside functions too), so that an import
moved into a function to get round a cycle is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (setup.cfg package_dir).
PACKAGES = {"model": "labelme_dsarad.model", "train": "labelme_dsarad.train", "labelme_dsarad": "labelme_dsarad"}
LAYERS = ("labelme_dsarad.model", "labelme_dsarad.train", "labelme_dsarad")  # each may import only those before it


def modules() -> dict[str, tuple[Path, str]]:
    """Module name -> (file, the package its relative imports start from); subpackages too."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            home = ".".join((package, *path.parent.relative_to(REPO / folder).parts))
            found[home if path.stem == "__init__" else f"{home}.{path.stem}"] = (path, home)
    return found


def imported_names(path: Path, package: str) -> set[str]:
    """Every module a file imports and every ``module.name`` it imports from one."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    known = modules()
    # The bare package is left out: it only marks the folder (its __init__ imports nothing of ours).
    return {name: {imported for imported in imported_names(path, package)
                   if imported in known and imported not in (name, "labelme_dsarad")}
            for name, (path, package) in known.items()}


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first again at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = visit(imported, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def layer(name: str) -> int:
    return next(index for index, prefix in enumerate(LAYERS) if name == prefix or name.startswith(prefix + "."))


def test_the_graph_reads_the_package():
    graph = import_graph()
    assert "labelme_dsarad.train.report" in graph["labelme_dsarad.train.evaluation"]
    assert "labelme_dsarad.model.scoring" in graph["labelme_dsarad.model.polygons"]
    assert "labelme_dsarad.model.labelfile" in graph["labelme_dsarad._labelme_adapter._files"]


def test_no_module_imports_itself_back():
    assert first_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert first_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_imports_point_from_the_plugin_to_train_to_model():
    upward = [f"{name} -> {imported}" for name, imports in import_graph().items()
              for imported in imports if layer(imported) > layer(name)]
    assert upward == []
