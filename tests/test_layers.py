"""The house stays easy to walk: import-linter's own contracts (pyproject.toml, `./run lint`) keep the app apart from
the automation, the automation's folders in layers with no import running back up (exhaustive: a new folder must be
given its place), and no module importing itself through its siblings. Each contract is shown to fail when broken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.stack  # runs import-linter as a process

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint(config: Path, where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, str(config), "--no-cache"], cwd=where,
                          env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_projects_contracts_are_kept() -> None:
    done = _lint(ROOT / "pyproject.toml", ROOT)
    assert done.returncode == 0 and "4 kept, 0 broken" in done.stdout, done.stdout + done.stderr


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_an_upward_import_and_an_unplaced_folder_each_break_a_contract(tmp_path: Path) -> None:
    _package(tmp_path, {
        "house/__init__.py": "",
        "house/top/__init__.py": "",
        "house/top/a.py": "from house.bottom import b\n",
        "house/bottom/__init__.py": "",
        "house/bottom/b.py": "def f():\n    from house.bottom import c\n",  # inside a function: still a circle
        "house/bottom/c.py": "import house.bottom.d\n",
        "house/bottom/d.py": "import house.bottom.b\nimport house.top.a\n",  # back up a layer
        "house/attic/__init__.py": "",  # in no layer
    })
    config = tmp_path / "contracts.toml"
    config.write_text("""[tool.importlinter]
root_packages = ["house"]

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
containers = ["house"]
exhaustive = true
layers = ["top", "bottom"]

[[tool.importlinter.contracts]]
name = "siblings"
type = "acyclic_siblings"
ancestors = ["house"]
""")
    done = _lint(config, tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 1 and "0 kept, 2 broken" in report, report
    assert "house.bottom.d -> house.top.a" in report, "the upward import is named"
    assert "house.attic" in report, "the unplaced folder is named"
    assert "No cycles are allowed in house.bottom" in report and ".d -> .b" in report, "the circle is named"
