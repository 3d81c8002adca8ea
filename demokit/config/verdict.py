"""mirrord's own verdict on what the demo hands mirrord: a small Rust program of ours (`mirrord-verdict/`) built
from mirrord's config and jq crates (its public source at tag 3.250.0, in `../shared/mirrord/src-3.250.0` beside
the clone: a test fixture, never copied into the project).

The tests build it (`python -m demokit.config.verdict build`, cached under ~/.cache/metalmart/mirrord-verdict);
`./run doctor` and `./run mirrord-config` use it when it is built and say so, and fall back to Python's check
otherwise: nothing a demo runs waits for a Rust build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from demokit.errors import NOT_READY, UserError

CRATE = Path(__file__).resolve().parent / "mirrord-verdict"
# Where the crate's path dependencies point (Cargo.toml): mirrord's source beside the clone.
FIXTURE = CRATE.parents[3] / "shared" / "mirrord" / "src-3.250.0"
MIRRORD_VERSION = "3.250.0"
Say = Callable[[str], None]


def cache_dir() -> Path:
    base = os.environ.get("METALMART_VERDICT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "mirrord-verdict")
    return Path(base)


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for path in (CRATE / "Cargo.toml", CRATE / "Cargo.lock", *sorted((CRATE / "src").glob("*.rs"))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def binary() -> Path:
    return cache_dir() / "target" / "debug" / "mirrord-verdict"


def _stamp() -> Path:
    return cache_dir() / "built-from"


def built() -> Path | None:
    """The program, when it was built from the sources as they are now; else None."""
    exe = binary()
    try:
        return exe if exe.is_file() and _stamp().read_text().strip() == _sources_hash() else None
    except OSError:
        return None


def unavailable() -> str | None:
    """Why the program cannot be built here (None when it can)."""
    if not (FIXTURE / "mirrord" / "config" / "Cargo.toml").is_file():
        return f"mirrord's source is not beside the clone ({FIXTURE})"
    if shutil.which("cargo") is None:
        return "no cargo on this machine (https://rustup.rs)"
    return None


def build(say: Say) -> Path:
    """Build the program (cargo, --locked, offline once the crates are fetched), or take the cached one."""
    exe = built()
    if exe is not None:
        return exe
    why = unavailable()
    if why:
        raise UserError(f"mirrord's own checker cannot be built: {why}", NOT_READY)
    log = cache_dir() / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"building mirrord's own checker from mirrord {MIRRORD_VERSION}'s source (log: {log})")
    t0 = time.monotonic()
    env = {**os.environ, "CARGO_TARGET_DIR": str(cache_dir() / "target")}
    with log.open("w") as out:
        done = subprocess.run(["cargo", "build", "--locked", "--manifest-path", str(CRATE / "Cargo.toml")],
                              env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise UserError(f"building mirrord's own checker failed (exit {done.returncode}): {' | '.join(tail)}; "
                        f"full log: {log}", NOT_READY)
    _stamp().write_text(_sources_hash())
    say(f"built mirrord's own checker in {time.monotonic() - t0:.0f} s")
    return binary()


class Verdict:
    """The running program: one JSON request per line, one answer per line (see mirrord-verdict/src/main.rs)."""

    def __init__(self, exe: Path) -> None:
        self._proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      bufsize=1)
        self._lock = threading.Lock()

    def __enter__(self) -> Verdict:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=10)

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mirrord-verdict ended (exit {self._proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and "ok" not in answer:
            raise ValueError(answer["error"])
        return answer

    def verify_config(self, path: Path) -> dict[str, Any]:
        return self.ask("verify_config", path=str(path))

    def verify_up(self, path: Path, key: str) -> dict[str, Any]:
        return self.ask("verify_up", path=str(path), key=key)

    def up_filter(self, key: str) -> str:
        return str(self.ask("up_filter", key=key)["jq_filter"])

    def regex(self, pattern: str) -> dict[str, Any]:
        return self.ask("regex", pattern=pattern)

    def regexes(self, patterns: list[str]) -> list[dict[str, Any]]:
        return list(self.ask("regexes", patterns=patterns)["verdicts"])

    def matches(self, kafka_filter: dict[str, Any], records: list[dict[str, Any]]) -> list[bool]:
        return list(self.ask("matches", filter=kafka_filter, records=records)["matches"])


def open_built() -> Verdict | None:
    """The program, running, when it is built; None otherwise (callers fall back to Python's check)."""
    exe = built()
    return Verdict(exe) if exe else None


def _text_or_base64(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode()


def record(topic: str, partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
           value: bytes | None, headers: Iterable[tuple[str, bytes | None]]) -> dict[str, Any]:
    """A Kafka record as mirrord's `jq_filter` sees it (its documentation: `topic`, `partition`, `offset`,
    `timestamp` in milliseconds when the record has one, `key`, `payload`, and `headers` as an object; strings, or
    base64 where not UTF-8). The operator builds this object in closed source; this is its documented shape."""
    out: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "key": _text_or_base64(key),
                           "payload": _text_or_base64(value),
                           "headers": {name: _text_or_base64(v) for name, v in headers}}
    if timestamp_ms is not None:
        out["timestamp"] = timestamp_ms
    return out


def main(argv: list[str]) -> int:
    """`python -m demokit.config.verdict build`: build it (the test setup), or say in one line why it cannot be."""
    if argv[:1] != ["build"]:
        print("usage: python -m demokit.config.verdict build", file=sys.stderr)
        return 2
    why = unavailable()
    if why:
        print(f"verdict: not built: {why}; the tests that need it are skipped", file=sys.stderr)
        return 0
    try:
        print(build(lambda m: print(f"verdict: {m}", file=sys.stderr, flush=True)))
    except UserError as exc:
        print(f"verdict: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
