"""Asking a region's registry whether it has a tag, through the registry's token flow (a stub registry on 127.0.0.1
that answers as Docker Hub and most hosted registries do: 401 with a Bearer challenge, a token service, then the
manifest for a request carrying the token)."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from demokit.errors import UNREACHABLE, UserError
from demokit.kube import registry
from tests.helpers import ROOT

TOKEN = "t0ken-for-tests"


class _Registry(http.server.BaseHTTPRequestHandler):
    token_status = 200  # what the token service answers
    seen_basic: ClassVar[list[str]] = []

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:  # the token service
        self.seen_basic.append(self.headers.get("Authorization", ""))
        if self.token_status != 200:
            self.send_response(self.token_status)
            self.end_headers()
            return
        body = json.dumps({"token": TOKEN}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # the manifest
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            host = self.headers["Host"]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="{host}"')
            self.end_headers()
            return
        self.send_response(200 if self.path.endswith("/manifests/demo-1") else 404)
        self.end_headers()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Registry.token_status = 200
    _Registry.seen_basic = []
    monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    try:
        yield f"127.0.0.1:{server.server_address[1]}/team/metalmart"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tag_is_found_or_not_through_the_token_flow(stub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.has_tag(stub, "demo-1") is True
    assert registry.has_tag(stub, "never-pushed") is False
    assert _Registry.seen_basic[-1] == "", "anonymous when there is no login"
    monkeypatch.setenv("REGISTRY_USERNAME", "dana")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    assert registry.has_tag(stub, "demo-1") is True
    assert _Registry.seen_basic[-1].startswith("Basic "), "the login goes to the token service"


def test_a_token_service_that_refuses_is_one_line_naming_the_login(stub: str) -> None:
    _Registry.token_status = 500
    with pytest.raises(UserError) as caught:
        registry.has_tag(stub, "demo-1")
    assert caught.value.code == UNREACHABLE
    message = str(caught.value)
    assert "\n" not in message and "token service" in message and "REGISTRY_USERNAME" in message


@pytest.mark.stack
@pytest.mark.parametrize("tool", ["docker", "podman", "buildah"])
def test_a_regions_image_is_built_for_its_nodes_platform_whatever_laptop_builds_it(
        tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An arm64 laptop used to push an arm64 image that the region's amd64 nodes cannot run."""
    from demokit import targets
    from demokit.tasks import region

    calls = tmp_path / "calls"
    (tmp_path / tool).write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(shutil, "which", lambda name, **_: str(tmp_path / name) if name == tool else None)
    answers = iter([False, True])
    monkeypatch.setattr(registry, "has_tag", lambda *_a, **_k: next(answers))
    target = targets.load("emea")
    tag = region.image_tag(target, check=False)
    build, push = calls.read_text().splitlines()
    argv = build.split()
    assert argv[argv.index("--platform") + 1] == "linux/amd64"
    assert argv[argv.index("--file") + 1] == str(ROOT / "Dockerfile")
    assert argv[0] == ("bud" if tool == "buildah" else "build") and argv[-1] == str(ROOT)
    assert push == f"push {target.get('metalmart_image_name')}:{tag}"
