"""Apache Kafka from pinned jars: what a user without Java, without the repository or with a tampered download sees
(one line with the fix), and that the cached jars are reused. The broker itself runs in every broker test."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from demokit.errors import UserError
from demokit.kafka import apache
from demokit.probes import free_port


@pytest.fixture
def repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, bytes]]:
    """A Maven repository on 127.0.0.1 serving what the test puts in it (by file name), and an empty cache."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.get(self.path.rsplit("/", 1)[-1])
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("METALMART_MAVEN_REPOSITORY", f"http://127.0.0.1:{server.server_address[1]}/maven2")
    monkeypatch.setenv("METALMART_KAFKA_CACHE", str(tmp_path / "cache"))
    yield served
    server.shutdown()


@pytest.fixture(scope="module")
def real_jars() -> dict[str, bytes]:
    """The jars as the real repository gave them (the user's cache, fetched once)."""
    lib = apache.ensure(print)
    return {a.file: (lib / a.file).read_bytes() for a in apache.artifacts()}


def test_a_tampered_jar_is_refused_naming_it_and_the_fix(real_jars: dict[str, bytes],
                                                          repository: dict[str, bytes]) -> None:
    jars = real_jars
    repository.update(jars)
    victim = apache.artifacts()[0]
    repository[victim.file] = b"not the real jar"
    with pytest.raises(UserError) as refused:
        apache.ensure(print)
    line = str(refused.value)
    assert "\n" not in line and victim.file in line and "not the locked" in line
    assert f"SHA-256 {hashlib.sha256(b'not the real jar').hexdigest()[:16]}" in line
    assert "METALMART_MAVEN_REPOSITORY" in line
    repository[victim.file] = jars[victim.file]
    lib = apache.ensure(print)
    assert sorted(p.name for p in lib.glob("*.jar")) == sorted(jars), "fetched whole once the mirror is right"


def test_an_unreachable_repository_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METALMART_MAVEN_REPOSITORY", f"http://127.0.0.1:{free_port()}/maven2")
    monkeypatch.setenv("METALMART_KAFKA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"could not fetch Apache Kafka's .*\.jar from http://127\.0\.0\.1:\d+/maven2"):
        apache.ensure(print)


@pytest.mark.stack
@pytest.mark.parametrize(("version", "found"), [("1.8.0_392", "8"), ("11.0.21", "11")])
def test_an_old_java_is_one_line_with_the_fix(version: str, found: str, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-01-16\' >&2\n')
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(UserError, match=f"needs Java 17 or newer; {java} is Java {found}: install a newer one"):
        apache.java()


def test_no_java_at_all_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="Apache Kafka needs Java 17 or newer and there is none: install it"):
        apache.java()


@pytest.mark.stack
def test_the_current_java_is_taken() -> None:
    assert Path(apache.java()).exists()
