"""The package's layers (docs/architecture.md): every import points to a lower layer or within its
own package, and no modules import each other in a circle. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# Lowest first. A package may import only from the packages before it (and from itself).
LAYERS = [
    {"errors", "version"},
    {"console", "textfile", "protos"},
    {"atomic", "lockfile"},
    {"figures"},
    {"data"},
    {"runs"},
    {"zoo"},
    {"config"},
    {"model"},
    {"evaluate"},
    {"predict"},
    {"train"},
    {"export"},
    {"odapi"},
    {"api"},
    {"cli"},
    {"__main__", "__init__"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The tfod modules `path` imports (a `from tfod.x import y` of a module counts as tfod.x.y)."""
    found: set[str] = set()
    modules = {_module(p) for p in SRC.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tfod")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfod"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        _module(path): _imports(path) - {_module(path)}
        for path in SRC.rglob("*.py")
        if not path.name.endswith("_pb2.py")
    }


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer() -> None:
    packages = {_package(module) for module in _graph()}
    assert packages <= set(RANK), packages - set(RANK)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _package(target) != _package(module) and RANK[_package(target)] >= RANK[_package(module)]
    )


def _circles(graph: dict[str, set[str]]) -> list[str]:
    circles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target in graph and target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_import_points_up_or_sideways() -> None:
    assert not _upward(_graph()), "\n".join(_upward(_graph()))


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert not _circles(_graph()), "\n".join(_circles(_graph()))


def test_the_checks_find_the_imports_that_made_the_old_circle() -> None:
    """export.exporter -> train.qat -> export.exporter, and config -> train, were they back."""
    graph = _graph()
    graph["tfod.train.qat"] = {*graph["tfod.train.qat"], "tfod.export.exporter"}
    graph["tfod.export.exporter"] = {*graph["tfod.export.exporter"], "tfod.train.qat"}
    graph["tfod.config.experiment"] = {*graph["tfod.config.experiment"], "tfod.train.budget"}
    assert _upward(graph) == [
        "tfod.config.experiment -> tfod.train.budget", "tfod.train.qat -> tfod.export.exporter"
    ]  # fmt: skip
    assert "tfod.export.exporter -> tfod.train.qat -> tfod.export.exporter" in _circles(graph)
