"""The `local` target: the broker and the four services as processes under supervisord, on 127.0.0.1.

Python rather than an Ansible role here: every step is a local process operation (ports, a supervisor over its
XML-RPC socket, readiness probes, cleaning up on Ctrl-C), which Ansible would only wrap in `command:` tasks, and the
tests start and stop this stack many times, where Ansible's own start-up would dominate.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka.admin import AdminClient

from demokit import probes
from demokit.errors import CONFLICT, NOT_READY, USAGE, UserError
from demokit.kafka import apache, describe, ensure_topic, tansu_command
from demokit.local.supervise import Program, Supervisor, tail
from demokit.targets import Target
from metalmart import services as table
from metalmart.smoke import SmokeFailed, smoke

BROKER = "broker"
Say = Callable[[str], None]


def names() -> tuple[str, ...]:
    """The processes of the local stack, in the order they start: the broker, then the table's services."""
    return (BROKER, *(s.name for s in table.services()))


@dataclass(frozen=True)
class LocalStack:
    target: Target
    # DEMO_MODE as chosen with `./run demo-mode` (kept over the inventory's while the stack runs).
    demo_override: bool | None = None

    # ---- layout -------------------------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.target.state_dir()

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.dir)

    @property
    def ports(self) -> dict[str, int]:
        """Each process's port: the table's, unless the inventory's local_ports names another (the broker's is
        always there)."""
        chosen = {k: int(v) for k, v in (self.target.get("local_ports") or {}).items()}
        return {s.name: chosen.get(s.name, s.port) for s in table.services()} | {BROKER: chosen[BROKER]}

    @property
    def database_url(self) -> str:
        """SQLite in the state folder, or the inventory's local_database_url (the fault bench's PostgreSQL)."""
        return str(self.target.get("local_database_url") or f"sqlite:///{self.dir / 'data' / 'metalmart.db'}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports[BROKER]}"

    @property
    def kafka(self) -> str:
        """Which broker: tansu (embedded, in memory, nothing to install) or apache (Apache Kafka from the pinned
        jars, as the clusters run it; its log survives a restart)."""
        chosen = str(self.target.get("local_kafka") or "tansu")
        if chosen not in ("tansu", "apache"):
            raise UserError(f"local_kafka must be tansu or apache (got {chosen!r}) in "
                            f"{self.target.path}/group_vars/all.yml", USAGE)
        return chosen

    @property
    def broker_name(self) -> str:
        """What `status` and `doctor` call the broker that runs (local_kafka checked first)."""
        _ = self.kafka
        return describe(self.target)

    def kafka_node(self) -> apache.Node:
        """The Apache Kafka node of local_kafka: apache (its controller listens on local_ports.kafka_controller,
        else the broker's port + 1)."""
        chosen = self.target.get("local_ports") or {}
        controller = int(chosen.get("kafka_controller") or self.ports[BROKER] + 1)
        return apache.Node(self.dir / "kafka", self.ports[BROKER], controller)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def topic(self) -> str:
        return str(self.target.get("metalmart_kafka_topic"))

    @property
    def demo_mode(self) -> bool:
        if self.demo_override is not None:
            return self.demo_override
        return bool(self.target.get("metalmart_demo_mode"))

    def live_demo_mode(self) -> dict[str, bool | None]:
        """DEMO_MODE as the running processes that read it have it ({} when the stack is not running)."""
        procs = self.processes()
        live: dict[str, bool | None] = {}
        for s in table.services():
            if not s.reads_demo_mode or s.name not in procs or not procs[s.name].get("pid"):
                continue
            try:
                value = psutil.Process(procs[s.name]["pid"]).environ().get("DEMO_MODE")
            except psutil.Error:
                value = None
            live[s.name] = None if value is None else value == "true"
        return live

    def set_demo_mode(self, on: bool, say: Say) -> list[str]:
        """Restart, with DEMO_MODE on or off, exactly the running processes that read it; returns their names."""
        stack = replace(self, demo_override=on)
        programs = stack.programs()
        self.supervisor.conf.write_text(self.supervisor.render(programs))
        rpc = self.supervisor.rpc()
        _added, changed, _removed = rpc.supervisor.reloadConfig()[0]
        for name in changed:
            rpc.supervisor.stopProcess(name, True)
            rpc.supervisor.removeProcessGroup(name)
            rpc.supervisor.addProcessGroup(name)
        stack._start(list(changed), [])
        self.supervisor.stamp_with(programs)
        for name in changed:
            say(f"  restarted {name}")
        return list(changed)

    def log_path(self, name: str) -> Path:
        return self.supervisor.log_path(name)

    # ---- supervisord ----------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """The value on this machine of every setting a service may read (the table says which it reads)."""
        t = self.target
        return {"KAFKA_BROKERS": self.bootstrap, "KAFKA_TOPIC": self.topic, "DATABASE_URL": self.database_url,
                "KAFKA_GROUP_ID": str(t.get("metalmart_kafka_group_id")),
                "KAFKA_SESSION_TIMEOUT_MS": str(t.get("metalmart_kafka_session_timeout_ms")),
                "ORDER_SERVICE_URL": self.url(table.by_command("order").name),
                "CATALOGUE_URL": self.url(table.by_command("catalogue").name),
                "DEMO_MODE": str(self.demo_mode).lower(),
                "PROCESSOR_CONCURRENCY": str(t.get("metalmart_processor_concurrency")),
                "ORDER_REPUBLISH_AFTER_S": str(t.get("metalmart_republish_after_s")),
                "METALMART_TARGET": t.name,
                "KAFKA_SPLIT_TOPIC_FORMAT": str(t.get("metalmart_kafka_split_topic_format")),
                # The local broker wants no login.
                "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": "",
                "KAFKA_SASL_PASSWORD": ""}

    def programs(self) -> list[Program]:
        """supervisord's programs, written from data; a hash of the result tells whether a running stack matches."""
        values = self.settings()
        common = {"PYTHONUNBUFFERED": "1", "HOST": "127.0.0.1"}
        broker = Program(BROKER, self.kafka_node().command(), {}) if self.kafka == "apache" else \
            Program(BROKER, tansu_command(self.ports[BROKER]), {"RUST_LOG": "warn"})
        programs = [broker]
        for s in table.services():
            env = {**common, **{name: values[name] for name in s.env}, "PORT": str(self.ports[s.name])}
            programs.append(Program(s.name, [sys.executable, "-m", "metalmart", s.command], env))
        return programs

    def processes(self) -> dict[str, dict[str, Any]]:
        return self.supervisor.processes()

    # ---- health ---------------------------------------------------------------------------------------------------

    def check(self, name: str) -> None:
        """Raise unless the process answers its readiness check right now."""
        if name == BROKER:
            probes.broker_answers(self.bootstrap, 1.5)
        else:
            probes.http_ok(f"{self.url(name)}{table.probe('ready')}", timeout=2.0)

    def health(self) -> dict[str, str]:
        out = {}
        for name in names():
            try:
                self.check(name)
                out[name] = "ready"
            except Exception as exc:
                out[name] = f"not ready: {exc}"
        return out

    def running_matches(self) -> bool:
        return self.supervisor.matches(self.programs())

    # ---- fresh-start ----------------------------------------------------------------------------------------------

    def fresh_start(self, say: Say, smoke: bool = True) -> dict[str, Any]:
        """Bring the stack up; when it already is, up to date and healthy, change nothing and say so."""
        procs = self.processes()
        if procs and all(p["statename"] == "RUNNING" for p in procs.values()) and self.running_matches():
            health = self.health()
            if all(v == "ready" for v in health.values()):
                put_right = self._put_right(say)
                if put_right:
                    say(f"the local stack is up; put right: {'; '.join(put_right)}")
                    return {"changed": True, "health": self.health()}
                say("the local stack is already up and healthy; nothing to do")
                return {"changed": False, "health": health}
        if procs:
            say("the local stack is partly up or out of date: restarting it")
            self.teardown(say)
        self.preflight_ports()
        started: list[str] = []
        try:
            self._start_all(say, started)
            if smoke:
                self.smoke_order(say)
        except BaseException:
            if started or self.supervisor.up():
                say("stopping what was started")
                self.teardown(lambda _m: None)
            raise
        return {"changed": True, "health": self.health()}

    def preflight_ports(self) -> None:
        ports = dict(self.ports)
        if self.kafka == "apache":
            ports["kafka_controller"] = self.kafka_node().controller_port
        for service, port in ports.items():
            holder = port_holder(port)
            if holder is not None:
                raise UserError(
                    f"port {port} ({service}) is already in use by {holder}; stop it, or give {service} another "
                    f"port in {self.target.path}/group_vars/all.yml (local_ports.{service}); nothing was started",
                    CONFLICT)

    def _start_all(self, say: Say, started: list[str]) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        if self.kafka == "apache":
            with _step(say, f"Apache Kafka {apache.VERSION} ready to run"):
                self.kafka_node().prepare(say)
        with _step(say, "supervisor"):
            self.supervisor.launch(self.programs(), target=self.target.name)
        with _step(say, f"{self.broker_name} on {self.bootstrap}"):
            self._start([BROKER], started)
        with _step(say, f"topic {self.topic}"):
            ensure_topic(self.bootstrap, self.topic, int(self.target.get("kafka_topic_partitions")))
        with _step(say, "catalogue seeded"):
            self._seed()
        services = [s.name for s in table.services()]
        with _step(say, ", ".join(services)):
            self._start(services, started)

    def _seed(self) -> dict[str, int]:
        """Seed the catalogue (idempotent); returns how many products were added and how many were there."""
        seed = table.by_command("seed")
        values = self.settings()
        env = {**os.environ, **{name: values[name] for name in seed.env}}
        out = subprocess.run([sys.executable, "-m", "metalmart", seed.command], capture_output=True, text=True,
                             env=env)
        if out.returncode != 0:
            raise UserError(f"seeding the catalogue failed: {out.stderr.strip().splitlines()[-1:]}", NOT_READY)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _put_right(self, say: Say) -> list[str]:
        """What a first run makes that can go missing while the processes run (the topic or some of its partitions,
        products of the catalogue): made again, as a first run would; returns what was put right."""
        changes = []
        want = int(self.target.get("kafka_topic_partitions"))
        meta = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=10)
        have = meta.topics.get(self.topic)
        if have is None or len(have.partitions) < want:
            with _step(say, f"topic {self.topic}"):
                ensure_topic(self.bootstrap, self.topic, want)
            changes.append(f"topic {self.topic} created" if have is None else
                           f"topic {self.topic} given {want - len(have.partitions)} more partition(s)")
            if have is None:
                # A consumer that was reading the deleted topic can keep waiting at its old positions (librdkafka,
                # seen on Apache Kafka): the topic's readers start again, as a first run starts them.
                readers = [s.name for s in table.services() if "KAFKA_GROUP_ID" in s.env]
                with _step(say, f"{', '.join(readers)} restarted to read the new topic"):
                    rpc = self.supervisor.rpc()
                    for name in readers:
                        rpc.supervisor.stopProcess(name, True)
                    self._start(readers, [])
                changes.append(f"{', '.join(readers)} restarted")
        seeded = self._seed()
        if seeded["added"]:
            changes.append(f"{seeded['added']} product(s) of the catalogue seeded again")
        return changes

    def _start(self, services: list[str], started: list[str]) -> None:
        self.supervisor.start(services)
        started.extend(services)
        timeout = float(self.target.get("local_ready_timeout", 30))
        for service in services:
            try:
                probes.until(lambda s=service: self._ready_or_dead(s), timeout, service)
            except probes.NotReady as exc:
                raise UserError(f"{service} did not become ready ({exc}); its last log lines:\n"
                                f"{tail(self.log_path(service))}\nfull log: {self.log_path(service)}",
                                NOT_READY) from None

    def _ready_or_dead(self, service: str) -> None:
        state = self.supervisor.state(service)
        if state in ("FATAL", "EXITED", "BACKOFF"):
            raise probes.NotReady(f"{service} is {state}")
        self.check(service)

    def smoke_order(self, say: Say, timeout: float = 60.0) -> dict[str, Any]:
        """One order from the order service to `shipped`, through the broker and the processor."""
        with _step(say, "smoke order shipped"):
            try:
                return smoke(self.url("order"), timeout)
            except SmokeFailed as exc:
                processor = table.by_command("processor").name
                raise UserError(f"{exc}; the processor's last log lines:\n{tail(self.log_path(processor))}",
                                NOT_READY) from None

    # ---- teardown -------------------------------------------------------------------------------------------------

    def teardown(self, say: Say, purge: bool = False) -> bool:
        """Stop every process and supervisord; True when something was running."""
        was_up = self.supervisor.shutdown()
        if was_up:
            say("stopped the local stack")
        for service, port in self.ports.items():
            probes.until(lambda p=port: probes.holds(port_holder(p) is None), 10, f"port {port} ({service}) released")
        if purge and self.dir.exists():
            shutil.rmtree(self.dir)
            say(f"deleted {self.dir}")
        return was_up


def port_holder(port: int) -> str | None:
    """Who listens on 127.0.0.1:port (or any address), as 'pid N (name)'; None when the port is free."""
    if not probes.port_open("127.0.0.1", port):
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return "another user's process"
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])[:80]})"
                return f"pid {conn.pid}"
    except psutil.AccessDenied:
        pass
    return "an unknown process"


@contextlib.contextmanager
def _step(say: Say, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    say(f"  ✓ {name} ({time.monotonic() - t0:.1f} s)")
