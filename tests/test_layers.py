"""The house stays easy to walk: no import circle anywhere in the project's code (a module can be read without the
ones that import it), and the layer contracts `./run lint` checks cover every module of the automation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

from tests.helpers import ROOT

PACKAGES = ("metalmart", "demokit", "benchmarks")


def _circles(*packages: str) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) & graph.modules for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_module_imports_itself_through_others() -> None:
    assert _circles(*PACKAGES) == []


def test_a_circle_is_found_when_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circled import b\n")
    (package / "b.py").write_text("def f():\n    from circled import c\n")  # inside a function: still a circle
    (package / "c.py").write_text("import circled.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _circles("circled") == [["circled.a", "circled.b", "circled.c"]]


def test_every_domain_of_the_automation_is_under_the_layer_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    domains = set(next(c for c in config if "domains" in c["name"])["source_modules"])
    top = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "demokit").iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.stem != "__init__"}
    assert {f"demokit.{m}" for m in top} - domains == {"demokit.cli", "demokit.tasks", "demokit.taskdef"}


def test_no_two_folders_of_the_automation_import_each_other() -> None:
    graph = grimp.build_graph("demokit", cache_dir=None)

    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = {(folder(m), folder(t)) for m in graph.modules for t in graph.find_modules_directly_imported_by(m)
             if t.startswith("demokit") and folder(m) != folder(t)}
    assert sorted((a, b) for a, b in edges if (b, a) in edges and a < b) == []
