"""The manual keeps its promises: the README stays a two-minute read that opens with its two commands, every page it
links to exists, and every `./run` command shown in the README and docs/ is one Invoke accepts as printed (asked
with --help, so nothing runs)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.helpers import ROOT, RUN

pytestmark = pytest.mark.stack  # ./run with --help

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `./run TASK …` in inline code (which may wrap), or a line of a shell block up to its comment.
INLINE = re.compile(r"`(\./run(?:\s[^`]*)?)`")
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
# What a reader fills in (a placeholder or a choice), and what is not a task's command line.
NOT_LITERAL = re.compile(r"[|…<>\[\]]|\.\.\.")


def _commands() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        shown = [m.group(1) for m in INLINE.finditer(text)]
        shown += [line.split("#")[0] for block in BLOCK.findall(text) for line in block.splitlines()
                  if line.strip().startswith("./run")]
        for raw in shown:
            command = " ".join(raw.split()).rstrip(".,;:)")
            if command == "./run" or NOT_LITERAL.search(command):
                continue
            found.setdefault(command, []).append(page.name)
    return found


def test_the_readme_is_a_two_minute_read_that_opens_with_its_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 1500, f"the README has {len(text.split())} words; move detail to docs/"
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block and [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()] == [
        "./run fresh-start", "./run test"]


def test_every_page_a_page_links_to_exists() -> None:
    for page in PAGES:
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links to {link}, which is not there"


def test_enough_commands_are_found_to_mean_something() -> None:
    commands = _commands()
    assert len(commands) >= 30, sorted(commands)
    assert "./run fresh-start --target minikube" in commands


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_shown_is_accepted_as_printed(command: str) -> None:
    argv = command.split()[1:]
    if argv[0].startswith("-"):
        argv = argv[:1]  # Invoke's own options (--list, --help TASK)
    elif argv[0] in ("test", "cluster", "lock", "lint") or argv[0].startswith("bench"):
        argv = argv[:1]  # their own argument words, or a run of the suite itself: the task's name is checked
    done = subprocess.run([*RUN, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "No idea what" not in done.stderr, (command, done.stderr)
