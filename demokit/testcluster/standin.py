"""The app image built for real where no registry can be reached: Buildah builds our Dockerfile from the context
`minikube image build` would send, over a stand-in for `python:3.11-slim-bookworm` made locally from Debian's
packages, and Podman (with runc) runs what it built.

How the stand-in differs from the real base (the README says the same):
- Debian bookworm's own Python 3.11 (`/usr/bin/python3`, linked from `/usr/local/bin/python` and `python3` where the
  real image has its own build); its headers come from `python3-dev`;
- made by `debootstrap --variant=minbase`, so a few packages the slim image carries may be missing, and the other way
  round;
- the machine's CA bundle copied in (pip and apt inside the build go through this machine's network).

Everything lives in a storage of its own under the cache folder (`~/.cache/metalmart/images`), never in the
machine's default container storage; the base is made once per recipe and reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from demokit.errors import NOT_READY, UserError
from demokit.images import DOCKERFILE, context
from demokit.images.builder import build_argv
from demokit.targets import ROOT

Say = Callable[[str], None]
BASE = "docker.io/library/python:3.11-slim-bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-dev", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# podman run here: runc (crun cannot run on a hybrid cgroup host) and no raising of hard rlimits.
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
TOOLS = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
BUILD_TOOLS = ("buildah", "debootstrap")  # what making a base and building over it need (podman only runs images)


def cache_dir() -> Path:
    base = os.environ.get("METALMART_IMAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "images")
    return Path(base)


def missing(tools: tuple[str, ...] = tuple(TOOLS)) -> list[str]:
    """The Debian packages `tools` come in that are not installed."""
    return [TOOLS[tool] for tool in tools if shutil.which(tool) is None]


class Storage:
    """A container storage of our own: Buildah builds into it, Podman runs from it."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "storage"
        self.flags = ["--root", str(self.root / "root"), "--runroot", str(self.root / "run"),
                      "--storage-driver", "overlay"]

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        if shutil.which(tool) is None:
            raise UserError(f"the image build needs {TOOLS.get(tool, tool)}: apt-get install {TOOLS.get(tool, tool)}",
                            NOT_READY)
        done = subprocess.run([tool, *self.flags, *args], capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise UserError(f"{tool} {args[0]} failed: {tail}", NOT_READY)
        return done

    def has(self, ref: str) -> bool:
        return self.run("buildah", "inspect", "--type", "image", ref, check=False).returncode == 0


def _recipe(arch: str | None) -> str:
    return hashlib.sha256(" ".join((SUITE, MIRROR, arch or "native", *PACKAGES)).encode()
                          + HOST_CA.read_bytes()).hexdigest()[:12]


def emulates(arch: str) -> bool:
    """Whether this machine runs `arch` binaries (binfmt_misc with Debian's qemu-user-static registered)."""
    machine = {"arm64": "aarch64"}.get(arch, arch)
    entry = Path(f"/proc/sys/fs/binfmt_misc/qemu-{machine}")
    return entry.is_file() and entry.read_text().startswith("enabled")


def ensure_base(storage: Storage, say: Say, arch: str | None = None) -> str:
    """The stand-in base in the storage, tagged as the real one (made once per recipe: about 40 s natively, about
    3 min for arm64 under emulation). `arch` (e.g. arm64) makes it for another architecture; keep each in a storage
    of its own, since both carry the real base's name."""
    absent = missing(BUILD_TOOLS)
    if absent:
        raise UserError(f"the image build needs {', '.join(absent)}: apt-get install {' '.join(absent)}", NOT_READY)
    label = f"metalmart.standin={_recipe(arch)}"
    if storage.has(BASE):
        done = storage.run("buildah", "inspect", "--type", "image", "--format", "{{.Docker.Config.Labels}}", BASE)
        if _recipe(arch) in done.stdout:
            return BASE
    say(f"image: making a stand-in for {BASE} ({arch or 'native'}) from Debian {SUITE} (debootstrap, once)")
    with tempfile.TemporaryDirectory(prefix="metalmart-standin-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(["debootstrap", "--variant=minbase", *([f"--arch={arch}"] if arch else []),
                               f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise UserError(f"debootstrap of Debian {SUITE} failed: {tail}", NOT_READY)
        shutil.copyfile(HOST_CA, rootfs / "etc/ssl/certs/ca-certificates.crt")
        (rootfs / "usr/local/bin").mkdir(parents=True, exist_ok=True)
        for name in ("python", "python3"):
            (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3")
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True, timeout=600)
        container = storage.run("buildah", "from", "scratch").stdout.strip()
        try:
            storage.run("buildah", "add", container, str(archive), "/")
            path = "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
            storage.run("buildah", "config", "--env", path, "--env", "LANG=C.UTF-8", "--label", label,
                        "--cmd", "python3", *(["--arch", arch] if arch else []), container)
            storage.run("buildah", "commit", container, BASE)
        finally:
            storage.run("buildah", "rm", container, check=False)
    return BASE


def prepare(say: Say, arch: str = "arm64") -> None:
    """The stand-in base for `arch` made ahead where this machine emulates it: under emulation debootstrap takes
    minutes, more than a test may wait, so the test setup calls this (`python -m demokit.testcluster.standin prepare
    arm64`) and the arm64 build test starts from it. Where there is no emulation, one line says the test is skipped."""
    if not emulates(arch):
        say(f"no {arch} emulation here (binfmt_misc with qemu-user-static): the {arch} build test will be skipped")
        return
    ensure_base(Storage(cache_dir() / f"storage-{arch}"), say, arch)


def build(storage: Storage, ref: str, say: Say, dockerfile: str | None = DOCKERFILE,
          source: Path = ROOT, arch: str | None = None) -> list[str]:
    """Build `ref` from the context `minikube image build --file DOCKERFILE` sends (`dockerfile=None`: without
    --file), with the flags every other build passes (`arch`: for linux/ARCH, as a region's build is); returns the
    files that were sent."""
    ensure_base(storage, say, arch)
    with tempfile.TemporaryDirectory(prefix="metalmart-context-") as tmp:
        sent = context.copy(source, Path(tmp), dockerfile)
        say(f"image: building {ref} from {len(sent)} files with buildah")
        # RUN steps in a chroot on the host's network: the runtimes' own isolation needs what this VM lacks.
        argv = build_argv("buildah", ref, Path(tmp), f"linux/{arch}" if arch else None, "--isolation", "chroot",
                          "--network", "host", "--pull=never", "--layers")
        storage.run(argv[0], *argv[1:])
    return sent


def run(storage: Storage, ref: str, name: str, args: list[str], env: dict[str, str]) -> None:
    """Start `ref` detached on the host's network, as the image's own user."""
    flags = [f"--env={k}={v}" for k, v in env.items()]
    storage.run("podman", "run", "--detach", "--rm", "--name", name, "--network", "host", *RUN_FLAGS, *flags, ref,
                *args)


def stop(storage: Storage, name: str) -> None:
    storage.run("podman", "rm", "--force", "--time", "5", name, check=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["prepare"] or len(sys.argv) != 3:
        print("usage: python -m demokit.testcluster.standin prepare ARCH (e.g. arm64)", file=sys.stderr)
        sys.exit(2)
    try:
        prepare(lambda m: print(m, file=sys.stderr, flush=True), sys.argv[2])
    except UserError as exc:
        print(f"image: {exc}", file=sys.stderr)
        sys.exit(exc.code)
