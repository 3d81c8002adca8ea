"""The README's opening command as a newcomer runs it: a clean clone, no virtualenv active, none of the tests'
wiring (no inventories of the tests, no ports of their choosing), Python 3.11+ and nothing else. `./run fresh-start`
makes `.venv`, falls back to `local` and brings the demo up; a second run changes nothing; `invoke` from its own
virtualenv runs the same tasks; teardown leaves nothing running. (The README's other command, `./run test`, is this
suite: CI runs it on a clean clone.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, path_without_minikube

pytestmark = [pytest.mark.slow, pytest.mark.stack]  # ./run in a clean clone


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README opens with its commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_a_clean_clone_runs_the_readmes_first_command_as_printed(tmp_path: Path) -> None:
    commands = _readme_commands()
    assert commands == ["./run fresh-start", "./run test"], commands
    clone = tmp_path / "metalmart"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("INVOKE_")}
    env["PATH"] = os.pathsep.join(d for d in path_without_minikube().split(os.pathsep)
                                  if not d.startswith(str(ROOT)))

    def run(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(argv), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        return done

    try:
        first = run(*commands[0].split())
        assert first.returncode == 0, first.stderr[-3000:]
        assert (clone / ".venv" / "bin" / "python").is_file(), "./run made the project's environment"
        assert "no minikube on this machine: using the `local` target" in first.stderr
        assert "smoke order shipped" in first.stderr and "Storefront" in first.stdout
        second = run(*commands[0].split())
        assert second.returncode == 0 and "(nothing changed)" in second.stdout, second.stderr[-3000:]

        # Invoke as a person installs it (its own virtualenv, as pipx makes), outside the project's.
        venv = tmp_path / "invoke"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pinned = next(line.split()[0] for line in (clone / "requirements" / "automation.txt").read_text()
                      .splitlines() if line.startswith("invoke=="))
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", pinned],
                       check=True, timeout=300)
        status = run(str(venv / "bin" / "invoke"), "status")
        assert status.returncode == 0, status.stderr
        assert re.search(r"order-processor\s+│\s+RUNNING", status.stdout), status.stdout
    finally:
        down = run("./run", "teardown", "--purge")
    assert down.returncode == 0, down.stderr
    assert "stopped the local stack" in down.stderr
