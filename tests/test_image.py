"""The app image: its build context exactly as `minikube image build` sends it, the flags every build passes, and a
real build by Buildah over a locally made stand-in base, whose every service starts as the image's non-root user."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from demokit.images import DOCKERFILE, content_tag, context
from demokit.kafka import ensure_topic
from demokit.probes import free_port, http_ok, until
from demokit.testcluster import standin
from tests.helpers import ROOT, Broker, Postgres

# ---- the context ------------------------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_role_names_the_dockerfile_and_the_context_minikube_sends_holds_it() -> None:
    """Without --file minikube adds the Dockerfile back only if .dockerignore lets it through."""
    tasks = yaml.safe_load((ROOT / "roles/images/tasks/main.yml").read_text())
    inner = [t for block in tasks for t in block.get("block", [])]
    build = next(t for t in inner if t["name"] == "Build the app image into minikube")
    argv = build["ansible.builtin.command"]["argv"]
    assert argv[:3] == ["minikube", "image", "build"]
    assert argv[argv.index("--file") + 1] == "{{ images_dockerfile }}"
    defaults = yaml.safe_load((ROOT / "roles/images/defaults/main.yml").read_text())
    assert defaults["images_dockerfile"] == DOCKERFILE
    for dockerfile in (DOCKERFILE, None):
        sent = context.files(ROOT, dockerfile)
        assert DOCKERFILE in sent and "requirements/app.txt" in sent and "metalmart/__main__.py" in sent
        assert not [f for f in sent if f.startswith((".venv/", "demokit/", "tests/", ".git/")) or "__pycache__" in f]


def test_dockerignore_is_read_as_docker_reads_it(tmp_path: Path) -> None:
    root = _tree(tmp_path, {n: "x" for n in (
        "Dockerfile", "app/main.py", "app/__pycache__/main.pyc", "app/sub/__pycache__/x.pyc", "app/sub/keep.txt",
        "docs/a.md", "docs/keep.md", "secret.env", "deep/a/b/c.log", "top.log")})
    (root / ".dockerignore").write_text("# comment\n\n*.env\n**/*.log\napp/**/__pycache__\ndocs\n!docs/keep.md\n")
    assert context.files(root, None) == [".dockerignore", "Dockerfile", "app/main.py", "app/sub/keep.txt",
                                         "docs/keep.md"]
    (root / ".dockerignore").write_text("*\n!app/\napp/sub\n")
    assert context.files(root, None) == ["app/__pycache__/main.pyc", "app/main.py"]
    assert context.files(root, "Dockerfile") == sorted([".dockerignore", "Dockerfile", "app/__pycache__/main.pyc",
                                                        "app/main.py"]), "--file adds both files back"


def test_the_content_tag_follows_every_file_the_build_is_sent(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for name in context.files(ROOT, DOCKERFILE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    first = content_tag(root)
    assert content_tag(root) == first
    (root / "README.md").write_text("not sent")
    assert content_tag(root) == first, "a file the build is not sent changes nothing"
    (root / ".dockerignore").write_text((root / ".dockerignore").read_text() + "metalmart/smoke.py\n")
    assert content_tag(root) != first, ".dockerignore decides what the image holds"


# ---- the real build ---------------------------------------------------------------------------------------------

needs_builder = pytest.mark.skipif(bool(standin.missing()), reason="buildah, podman, runc or debootstrap is missing "
                                   "(scripts/ensure-test-deps.sh installs them)")


@pytest.fixture(scope="session")
def image() -> Iterator[tuple[standin.Storage, str]]:
    storage = standin.Storage()
    ref = f"localhost/metalmart:{content_tag()}"
    sent = standin.build(storage, ref, print)
    assert DOCKERFILE in sent
    yield storage, ref


def _container(storage: standin.Storage, ref: str, args: list[str], env: dict[str, str]) -> str:
    name = f"mm-test-{uuid.uuid4().hex[:8]}"
    standin.run(storage, ref, name, args, env)
    return name


@pytest.mark.slow
@needs_builder
@pytest.mark.stack
def test_every_service_in_the_built_image_starts_as_its_non_root_user(
        image: tuple[standin.Storage, str], broker: Broker, postgres: Postgres) -> None:
    storage, ref = image
    database = postgres.new_database()
    ports = {name: free_port() for name in ("order", "processor", "catalogue", "storefront")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    common = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": f"image-{uuid.uuid4().hex[:6]}",
              "KAFKA_GROUP_ID": f"image-{uuid.uuid4().hex[:6]}", "DEMO_MODE": "true", "DATABASE_URL": database,
              "ORDER_SERVICE_URL": urls["order"], "CATALOGUE_URL": urls["catalogue"]}
    ensure_topic(broker.bootstrap, common["KAFKA_TOPIC"], 1)
    names: list[str] = []
    try:
        seed = subprocess.run(["podman", *storage.flags, "run", "--rm", "--network", "host", *standin.RUN_FLAGS,
                               f"--env=DATABASE_URL={database}", ref, "seed"], capture_output=True, text=True,
                              timeout=120)
        assert seed.returncode == 0, seed.stderr
        for service, port in ports.items():
            names.append(_container(storage, ref, [service], {**common, "PORT": str(port)}))
        for service, url in urls.items():
            until(lambda u=url: http_ok(f"{u}/ready", 2), 60, f"{service} in the image")
            assert http_ok(f"{url}/health", 2)["status"] == "ok"
        for name in names:
            uid = subprocess.run(["podman", *storage.flags, "exec", name, "id", "-u"], capture_output=True, text=True)
            assert uid.stdout.strip() == "10001", "every service runs as the image's own non-root user"
        load = subprocess.run(["podman", *storage.flags, "run", "--rm", "--network", "host", *standin.RUN_FLAGS, ref,
                               "loadgen", "--rate", "10", "--duration", "2", "--base-url", urls["order"],
                               "--catalogue-url", urls["catalogue"]], capture_output=True, text=True, timeout=120)
        assert load.returncode == 0, load.stderr
        report = next(json.loads(line) for line in load.stdout.splitlines() if '"report"' in line)["report"]
        assert report["succeeded"] == 20 and report["failed"] == 0 and report["dropped"] == 0
    finally:
        for name in names:
            standin.stop(storage, name)


@pytest.mark.slow
@needs_builder
@pytest.mark.stack
def test_a_dockerignore_that_drops_the_dockerfile_fails_a_build_without_file(
        image: tuple[standin.Storage, str], tmp_path: Path) -> None:
    """What minikube did before roles/images passed --file: the Dockerfile never reached the builder."""
    storage, _ = image
    root = tmp_path / "repo"
    for name in context.files(ROOT, DOCKERFILE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    (root / ".dockerignore").write_text("*\n!requirements/app.txt\n!metalmart/\n")
    with pytest.raises(Exception, match="Dockerfile"):
        standin.build(storage, "localhost/metalmart:no-dockerfile", print, dockerfile=None, source=root)
    sent = standin.build(storage, "localhost/metalmart:with-file", print, dockerfile=DOCKERFILE, source=root)
    assert DOCKERFILE in sent


@pytest.mark.slow
@needs_builder
# Built cold (no layer cached from an earlier run) under emulation this takes about 5 minutes on 2 cores: apt and
# gcc for hdrhistogram run through qemu. The global 300 s is for hangs; this test's own is 15 minutes.
@pytest.mark.timeout(900)
@pytest.mark.skipif(not standin.emulates("arm64"), reason="this machine cannot run arm64 binaries (binfmt_misc with "
                    "qemu-user-static; scripts/ensure-test-deps.sh sets it up where the kernel allows)")
@pytest.mark.stack
def test_the_image_builds_for_linux_arm64_where_hdrhistogram_has_no_wheel() -> None:
    """An Apple Silicon minikube node's build: pip compiles hdrhistogram in the build stage, and the image runs."""
    storage = standin.Storage(standin.cache_dir() / "storage-arm64")
    ref = f"localhost/metalmart:{content_tag()}-arm64"
    standin.build(storage, ref, print, arch="arm64")
    arch = storage.run("buildah", "inspect", "--type", "image", "--format", "{{.OCIv1.Architecture}}", ref)
    assert arch.stdout.strip() == "arm64"
    done = subprocess.run(["podman", *storage.flags, "run", "--rm", "--network", "none", *standin.RUN_FLAGS, "--arch",
                           "arm64", "--entrypoint", "python", ref, "-c",
                           "import platform, hdrh.histogram; print(platform.machine())"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "aarch64", done.stderr
