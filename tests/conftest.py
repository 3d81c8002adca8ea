from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demokit import targets
from demokit.config import render
from demokit.probes import free_port, http_ok, until
from demokit.testcluster import kubebuild
from demokit.testcluster.controlplane import ControlPlane
from tests import kube
from tests.helpers import (
    ROOT,
    AppStack,
    Broker,
    ExternalBroker,
    KafkaBroker,
    Postgres,
    Proc,
    TansuBroker,
    inventory,
    service,
    wait_broker,
)

# ---- which tests share a worker under `./run test` (pytest-xdist) ------------------------------------------------

# Files that must run in one process, in order: the real node (one per machine: `./run cluster start` with its node
# and test_real_node's module node take the same bridge), and the session's converged target (built once for both
# files; test_deploy_roles tears it down last). Every other file is a unit of its own, so module fixtures are made
# once.
SHARED_GROUPS = {
    "test_controlplane.py": "real-node",
    "test_real_node.py": "real-node",
    "test_journey_cluster.py": "real-node",
    "test_cluster_access.py": "converged",
    "test_deploy_roles.py": "converged",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's file-by-file scheduling with the groups above (its own `xdist_group` marker does not reach the
    scheduler with pytest 9, whose test ids it can no longer rewrite)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_GROUPS.get(path.rsplit("/", 1)[-1], path)

    return ByGroup(config, log)


# ---- tiers: what a test starts ------------------------------------------------------------------------------------

TIERS = ("unit", "stack", "cluster", "browser")
# Fixtures that start processes: a test using one is in the stack tier at least (cluster and browser stay theirs).
PROCESS_FIXTURES = {"broker", "tansu", "postgres", "database_url", "mirrord", "render_minikube", "stack", "log_dir",
                    "control_plane", "pod_backend", "converged"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in exactly one tier: its own marker, or `stack` when it uses a fixture that starts processes, else
    `unit` (kept from starting any: `_unit_starts_no_process`). Two tiers on one test stop the collection."""
    both = []
    for item in items:
        named = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(named) > 1:
            both.append(f"{item.nodeid}: {', '.join(sorted(named))}")
        elif not named:
            uses = set(getattr(item, "fixturenames", ())) & PROCESS_FIXTURES
            item.add_marker(pytest.mark.stack if uses else pytest.mark.unit)
    if both:
        raise pytest.UsageError("a test is in one tier only; these name several:\n" + "\n".join(both))


_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Each test's setup, call and teardown time, by its tier (on the controller under pytest-xdist)."""
    tier = next((t for t in TIERS if t in report.keywords), "unit")
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The tiers' share of the run: test time summed per tier (across workers, so it can pass the wall time)."""
    if _TIER_SECONDS:
        total = sum(_TIER_SECONDS.values())
        terminalreporter.write_line("time by tier (summed over workers): " + ", ".join(
            f"{t} {_TIER_SECONDS[t] / 60:.1f} min ({_TIER_SECONDS[t] / total:.0%})" for t in TIERS
            if t in _TIER_SECONDS))


class _NoProcess(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _unit_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tier starts no process: a test that does belongs to `stack` (mark it so)."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _NoProcess(f"{request.node.nodeid} is in the unit tier and started a process; mark it "
                         "pytest.mark.stack")

    import subprocess

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def broker(log_dir: Path) -> Iterator[Broker]:
    """Apache Kafka, as the clusters run it: one per test session, shared, so every test uses topics and groups of
    its own and never assumes an empty broker. METALMART_TEST_BOOTSTRAP=HOST:PORT runs the tests against a broker
    that is already there instead (with auto.create.topics.enable=false, as ours)."""
    given = os.environ.get("METALMART_TEST_BOOTSTRAP")
    if given:
        wait_broker(given, 30)
        yield ExternalBroker(given)
        return
    b = KafkaBroker(log_dir).start()
    yield b
    b.remove()


@pytest.fixture(scope="session")
def tansu(log_dir: Path) -> Iterator[Broker]:
    """Tansu, the `local` target's default broker, for what only concerns it."""
    b = TansuBroker(log_dir).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(log_dir: Path) -> Iterator[Postgres]:
    pg = Postgres(log_dir).start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: the cluster runs PostgreSQL, the `local` target SQLite."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metalmart.db'}"
    return request.getfixturevalue("postgres").new_database()


# ---- mirrord's own verdict ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mirrord() -> Iterator[Any]:
    """mirrord's own config and jq code (demokit/config/verdict.py), built from ../shared/mirrord/src-3.250.0 by
    `./run test`'s setup (or here, once): skipped with the reason where it cannot be built."""
    from demokit.config import verdict

    why = verdict.unavailable()
    if why:
        pytest.skip(f"mirrord's own checker cannot be built: {why}")
    with verdict.Verdict(verdict.build(lambda m: print(m, file=sys.stderr))) as running:
        yield running


# ---- what a target deploys, rendered by the roles --------------------------------------------------------------

Rendered = tuple[list[dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="session")
def render_minikube(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Rendered]:
    """render_minikube(**inventory_values) -> (objects in apply order, mirrord config): the minikube target with
    those values over its inventory, rendered by `./run render`'s engine (the deploy roles with a render folder).
    Each distinct set of values is rendered once per session; fresh=True renders again."""
    cache: dict[str, Rendered] = {}

    def rendered(fresh: bool = False, **values: Any) -> Rendered:
        key = json.dumps(values, sort_keys=True)
        if fresh or key not in cache:
            folder = inventory(tmp_path_factory.mktemp("inventory"), "minikube", **values)
            cache[key] = render.rendered(targets.load("minikube", folder))
        return cache[key]

    return rendered


# ---- a real Kubernetes control plane ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok on 127.0.0.1 (built once, then cached)."""
    plane = ControlPlane(tmp_path_factory.mktemp("kube"), context=kube.CONTEXT)
    plane.start(lambda m: print(m, file=sys.stderr))
    # The operator's chart is installed with the pinned Helm (./run test's setup builds it; here only when missing).
    kubebuild.ensure(lambda m: print(m, file=sys.stderr), ("helm",))
    yield plane
    plane.stop(lambda _m: None)


class PodBackend:
    """What the cluster's app pods stand for, as local processes: the order service, the processor and the
    catalogue on SQLite and the session's broker. `exec` in any pod runs locally with ORDER_SERVICE_URL pointing
    here (the verify step's smoke order ships through them)."""

    def __init__(self, broker: Broker, log_dir: Path, tmp: Path) -> None:
        self.stack = AppStack(broker.bootstrap, f"sqlite:///{tmp / 'pods.db'}", log_dir).start()
        self.catalogue_port = free_port()
        self.catalogue: Proc = service("catalogue", {"DATABASE_URL": self.stack.database_url,
                                                     "PORT": str(self.catalogue_port)}, log_dir).start()
        until(lambda: http_ok(f"http://127.0.0.1:{self.catalogue_port}/ready"), 30, "catalogue")

    @property
    def order_port(self) -> int:
        return self.stack.order_port

    def stop(self) -> None:
        self.catalogue.stop()
        self.stack.stop()


@pytest.fixture(scope="session")
def pod_backend(control_plane: ControlPlane, broker: Broker, log_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodBackend]:
    backend = PodBackend(broker, log_dir, tmp_path_factory.mktemp("pods"))
    control_plane.exec_locally("metalmart-tests", {"ORDER_SERVICE_URL": backend.stack.base}, ROOT)
    yield backend
    backend.stop()


class Converged:
    def __init__(self, target: kube.ClusterTarget, first: object, second: object, first_log: str,
                 second_log: str) -> None:
        self.target, self.first, self.second = target, first, second
        self.first_log, self.second_log = first_log, second_log


@pytest.fixture(scope="session")
def converged(control_plane: ControlPlane, pod_backend: PodBackend,
              tmp_path_factory: pytest.TempPathFactory) -> Converged:
    """A cluster target brought up twice with `./run fresh-start` (its verify step's smoke order shipped through
    the pod backend). Tests that change it restore it; the teardown test runs last (tests/test_deploy_roles.py)."""
    target = kube.make_target(control_plane, tmp_path_factory.mktemp("converge"))
    first = target.run("fresh-start", "--target", target.name)
    first_log = (target.state / "ansible-deploy-cluster.log").read_text()  # each run writes the log anew
    second = target.run("fresh-start", "--target", target.name)
    second_log = (target.state / "ansible-deploy-cluster.log").read_text()
    return Converged(target, first, second, first_log, second_log)
