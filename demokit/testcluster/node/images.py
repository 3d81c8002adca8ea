"""The images the real node runs, made here because nothing can be pulled: its sandbox ("pause") image, stand-ins
for the Kafka and PostgreSQL images the roles deploy, and the app image from our Dockerfile. Each is built once
into the image storage of `demokit.testcluster.standin` (Buildah) and imported into the node's containerd as a
docker-archive; an image the node already holds is not imported again. The stand-ins are tagged with a hash of
what they are made from.

How the stand-ins differ from the images the clusters pull (the README says the same):
- Kafka: the pinned jars of `demokit.kafka.apache` (the same version as the `apache/kafka` tag), Debian's OpenJDK 17,
  and short scripts of our own in `/opt/kafka/bin` (`kafka-topics.sh`, `kafka-consumer-groups.sh`,
  `kafka-server-start.sh`, `kafka-run-class.sh`) where the image carries Apache's; configuration through the jar's
  own `kafka.docker.KafkaDockerWrapper`, as the image's entrypoint does;
- PostgreSQL: Debian bookworm's server (15, where the role deploys 16 on Alpine) with an entrypoint of ours that
  keeps the official image's contract (`POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB`, `PGDATA`, uid 70);
- pause: a ten-line Go program built here (`files/pause/main.go`).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from demokit.errors import NOT_READY, UserError
from demokit.kafka import apache
from demokit.testcluster import kubebuild, standin


class Node(Protocol):
    """What these steps need of a real node (demokit.testcluster.node.Node): its containerd's `ctr`."""

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]: ...


Say = Callable[[str], None]
FILES = Path(__file__).with_name("files")
KAFKA_IMAGE = f"localhost/metalmart-kafka:{apache.VERSION}"
POSTGRES_IMAGE = "localhost/metalmart-postgres:15"


def _recipe(folder: Path, *extra: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:12]


def has(node: Node, ref: str) -> bool:
    listed = node.ctr("images", "list", "--quiet").stdout.split()
    return ref in listed or f"docker.io/library/{ref}" in listed


def _import(node: Node, archive: Path) -> None:
    node.ctr("images", "import", "--no-unpack=false", str(archive), timeout=900)


def _from_storage(node: Node, storage: standin.Storage, ref: str) -> None:
    with tempfile.TemporaryDirectory(prefix="metalmart-node-image-") as tmp:
        archive = Path(tmp) / "image.tar"
        storage.run("buildah", "push", "--quiet", ref, f"docker-archive:{archive}:{ref}")
        _import(node, archive)


# ---- pause ----------------------------------------------------------------------------------------------------------

def ensure_pause(node: Node, say: Say, image: str) -> None:
    """The sandbox image `image` (the node's containerd names it), built here when the node does not hold it."""
    if has(node, image):
        return
    say("node: building the sandbox (pause) image")
    go = kubebuild.go_command(say)
    with tempfile.TemporaryDirectory(prefix="metalmart-pause-") as tmp:
        work = Path(tmp)
        shutil.copyfile(FILES / "pause" / "main.go", work / "main.go")
        (work / "go.mod").write_text("module metalmart.local/pause\n\ngo 1.21\n")
        env = {**kubebuild._go_env(work), "GOFLAGS": "-trimpath"}
        done = subprocess.run([go, "build", "-ldflags", "-s -w", "-o", str(work / "pause"), "."], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise UserError(f"building the pause image failed: {done.stderr.strip()[-300:]}", NOT_READY)
        archive = work / "pause.tar"
        docker_archive(archive, image, {"pause": (work / "pause").read_bytes()}, ["/pause"])
        _import(node, archive)


def docker_archive(path: Path, ref: str, files: dict[str, bytes], entrypoint: list[str]) -> None:
    """A one-layer docker-archive (what `docker save` writes) holding `files` (mode 0755) at the root."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [{"created_by": "metalmart"}]},
                        sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---- Kafka and PostgreSQL -----------------------------------------------------------------------------------------

def _build(storage: standin.Storage, name: str, folder: Path, say: Say, extra: dict[str, Path] | None = None) -> str:
    """`buildah bud` of FILES/<folder> (plus `extra` copied into the context) over the stand-in base, tagged
    `name-<recipe>`: built again only when a file changes. Returns the reference."""
    recipe = _recipe(folder, *(f"{k}:{_recipe(v)}" for k, v in sorted((extra or {}).items())))
    ref = f"{name}-{recipe}"
    if storage.has(ref):
        return ref
    base = standin.ensure_base(storage, say)
    say(f"node: building {ref} (once per recipe)")
    with tempfile.TemporaryDirectory(prefix="metalmart-node-context-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(folder, ctx, dirs_exist_ok=True)
        for name, source in (extra or {}).items():
            shutil.copytree(source, ctx / name)
        storage.run("buildah", "bud", "--isolation", "chroot", "--network", "host", "--pull=never", "--layers",
                    "--build-arg", f"BASE={base}", "--label", f"metalmart.recipe={recipe}",
                    "--file", str(ctx / "Containerfile"), "--tag", ref, str(ctx))
    return ref


def build_services(say: Say) -> dict[str, str]:
    """The Kafka and PostgreSQL stand-ins built in the image storage: {role variable: reference with recipe}."""
    storage = standin.Storage()
    lib = apache.ensure(say)
    return {"kafka_image": _build(storage, KAFKA_IMAGE, FILES / "kafka", say, {"libs": lib}),
            "postgres_image": _build(storage, POSTGRES_IMAGE, FILES / "postgres", say)}


def ensure_services(node: Node, say: Say) -> dict[str, str]:
    """The Kafka and PostgreSQL stand-ins, built and in the node under their recipe's tag and the stable one
    (KAFKA_IMAGE, POSTGRES_IMAGE); returns {role variable: stable image}."""
    storage = standin.Storage()
    refs = build_services(say)
    for ref in refs.values():
        if not has(node, ref):
            say(f"node: importing {ref}")
            _from_storage(node, storage, ref)
        # The inventories name the stable tag; it follows the latest recipe.
        node.ctr("images", "tag", "--force", ref, ref.rsplit("-", 1)[0])
    return {k: v.rsplit("-", 1)[0] for k, v in refs.items()}


# ---- the app --------------------------------------------------------------------------------------------------------

def load_app(node: Node, ref: str, say: Say) -> bool:
    """The app image `ref` (name:content-tag) built from our Dockerfile and in the node; True when it was imported."""
    if has(node, ref):
        return False
    storage = standin.Storage()
    if not storage.has(ref):
        standin.build(storage, ref, say)
    say(f"node: importing {ref}")
    _from_storage(node, storage, ref)
    return True
