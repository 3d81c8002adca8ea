"""The build context exactly as a builder is sent it: the folder less what `.dockerignore` excludes, with the
patterns read the way Docker's own pattern matcher reads them (moby/patternmatcher: `*` and `?` within one path
element, `**` across elements, `!` to take a path back, the last matching line wins, and a pattern that matches a
folder matches everything below it).

`minikube image build` packs the folder this way and adds the Dockerfile and `.dockerignore` back only when `--file`
names the Dockerfile (go-dockerclient's createTarStream); `docker build .` and `podman build .` always add them, so
a plain build hides a `.dockerignore` that leaves the Dockerfile out.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str]
    exception: bool

    @property
    def prefix(self) -> str:
        """The literal start of the pattern, up to its first wildcard."""
        return re.split(r"[*?\[\\]", self.text, maxsplit=1)[0]


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":  # `**/`: any number of folders, none included
                    i += 1
                    out.append("(.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def parse(text: str) -> list[Pattern]:
    """The patterns of a `.dockerignore` (comments and blank lines skipped, each pattern cleaned like a path)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        cleaned = os.path.normpath(line).lstrip("/") if line else ""
        if not cleaned or cleaned == ".":
            continue
        patterns.append(Pattern(cleaned, _regex(cleaned), exception))
    return patterns


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """Whether `path` (relative, with `/`) is left out: the last pattern matching it or a folder above it decides."""
    parents = path.split("/")
    candidates = [path] + ["/".join(parents[:n]) for n in range(1, len(parents))]
    verdict = False
    for pattern in patterns:
        if any(pattern.regex.match(c) for c in candidates):
            verdict = not pattern.exception
    return verdict


def files(root: Path, dockerfile: str | None) -> list[str]:
    """The files a builder is sent from `root` (relative paths, sorted). `dockerfile` is what `--file` names: with
    it, the Dockerfile and `.dockerignore` are sent even when excluded; without it, nothing is added back."""
    ignore = root / ".dockerignore"
    patterns = parse(ignore.read_text()) if ignore.is_file() else []
    exceptions = [p for p in patterns if p.exception]
    sent: list[str] = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        # An excluded folder is walked only when a `!` line could take something inside it back.
        dirs[:] = sorted(d for d in dirs if not excluded(rel + d, patterns) or any(
            p.prefix.startswith(rel + d + "/") or (rel + d).startswith(p.prefix.rstrip("/")) for p in exceptions))
        sent.extend(rel + n for n in names if not excluded(rel + n, patterns))
    if dockerfile:
        for forced in (".dockerignore", dockerfile):
            if (root / forced).is_file() and forced not in sent:
                sent.append(forced)
    return sorted(sent)


def copy(root: Path, dest: Path, dockerfile: str | None) -> list[str]:
    """Write the context a builder is sent into `dest` (an empty folder); returns what was written."""
    sent = files(root, dockerfile)
    for name in sent:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return sent
