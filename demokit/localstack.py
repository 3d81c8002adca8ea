"""The `local` target: the broker and the four services as processes under supervisord, on 127.0.0.1.

Python rather than an Ansible role here: every step is a local process operation (ports, a supervisor over its
XML-RPC socket, readiness probes, cleaning up on Ctrl-C), which Ansible would only wrap in `command:` tasks, and the
tests start and stop this stack many times, where Ansible's own start-up would dominate.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from supervisor.xmlrpc import SupervisorTransport

from demokit import probes
from demokit.errors import CONFLICT, NOT_READY, UserError
from demokit.kafka import ensure_topic, tansu_command
from demokit.targets import Target
from metalmart.smoke import SmokeFailed, smoke

SERVICES = ("broker", "order", "catalogue", "processor", "storefront")
Say = Callable[[str], None]


@dataclass(frozen=True)
class LocalStack:
    target: Target

    # ---- layout -------------------------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.target.state_dir()

    @property
    def ports(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.target.get("local_ports", {}).items()}

    @property
    def socket(self) -> Path:
        return self.dir / "supervisor.sock"

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.dir / 'data' / 'metalmart.db'}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['broker']}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def topic(self) -> str:
        return str(self.target.get("kafka_topic", "order.created"))

    @property
    def demo_mode(self) -> bool:
        return bool(self.target.get("demo_mode", True))

    def log_path(self, service: str) -> Path:
        return self.dir / "logs" / f"{service}.log"

    # ---- supervisord ----------------------------------------------------------------------------------------------

    def _env(self, service: str) -> dict[str, str]:
        p = self.ports
        common = {"PYTHONUNBUFFERED": "1", "HOST": "127.0.0.1", "KAFKA_BROKERS": self.bootstrap,
                  "KAFKA_TOPIC": self.topic, "DATABASE_URL": self.database_url}
        return {
            "broker": {"RUST_LOG": "warn"},
            "order": {**common, "PORT": str(p["order"])},
            "catalogue": {**common, "PORT": str(p["catalogue"])},
            "processor": {**common, "PORT": str(p["processor"]),
                          "KAFKA_GROUP_ID": str(self.target.get("kafka_group_id", "order-processor")),
                          "ORDER_SERVICE_URL": self.url("order"), "DEMO_MODE": str(self.demo_mode).lower(),
                          "PROCESSOR_CONCURRENCY": str(self.target.get("processor_concurrency", 256)),
                          "KAFKA_SESSION_TIMEOUT_MS": str(self.target.get("kafka_session_timeout_ms", 10000))},
            "storefront": {"PYTHONUNBUFFERED": "1", "HOST": "127.0.0.1", "PORT": str(p["storefront"]),
                           "ORDER_SERVICE_URL": self.url("order"), "CATALOGUE_URL": self.url("catalogue"),
                           "DEMO_MODE": str(self.demo_mode).lower()},
        }[service]

    def _command(self, service: str) -> list[str]:
        if service == "broker":
            return tansu_command(self.ports["broker"])
        return [sys.executable, "-m", "metalmart", service]

    def render_conf(self) -> str:
        """supervisord.conf, written from data; its hash tells whether a running stack matches the inventory."""
        cp = configparser.ConfigParser(interpolation=None)
        cp["unix_http_server"] = {"file": str(self.socket), "chmod": "0700"}
        cp["supervisord"] = {"logfile": str(self.dir / "logs" / "supervisord.log"),
                             "pidfile": str(self.dir / "supervisord.pid"), "childlogdir": str(self.dir / "logs"),
                             "nodaemon": "false", "silent": "true"}
        cp["rpcinterface:supervisor"] = {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
        cp["supervisorctl"] = {"serverurl": f"unix://{self.socket}"}
        for service in SERVICES:
            env = ",".join(f'{k}="{v}"' for k, v in self._env(service).items())
            cp[f"program:{service}"] = {
                "command": " ".join(_quote(a) for a in self._command(service)),
                "directory": str(self.dir), "environment": env, "autostart": "false", "autorestart": "true",
                "startsecs": "1", "startretries": "3", "stopsignal": "TERM", "stopwaitsecs": "15",
                "stopasgroup": "true", "killasgroup": "true", "redirect_stderr": "true",
                "stdout_logfile": str(self.log_path(service)), "stdout_logfile_maxbytes": "20MB",
                "stdout_logfile_backups": "2",
            }
        lines: list[str] = []
        for section in cp.sections():
            lines.append(f"[{section}]")
            lines.extend(f"{k}={v}" for k, v in cp[section].items())
            lines.append("")
        return "\n".join(lines)

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def supervisor_up(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
            return False

    def processes(self) -> dict[str, dict[str, Any]]:
        if not self.supervisor_up():
            return {}
        return {p["name"]: p for p in self.rpc().supervisor.getAllProcessInfo()}

    # ---- health ---------------------------------------------------------------------------------------------------

    def check(self, service: str) -> None:
        """Raise unless the service answers its readiness check right now."""
        if service == "broker":
            probes.broker_answers(self.bootstrap, 1.5)
        else:
            probes.http_ok(f"{self.url(service)}/ready", timeout=2.0)

    def health(self) -> dict[str, str]:
        out = {}
        for service in SERVICES:
            try:
                self.check(service)
                out[service] = "ready"
            except Exception as exc:
                out[service] = f"not ready: {exc}"
        return out

    def running_matches(self) -> bool:
        stamp = self.dir / "stack.json"
        return stamp.exists() and json.loads(stamp.read_text()).get("conf_sha256") == _sha(self.render_conf())

    # ---- fresh-start ----------------------------------------------------------------------------------------------

    def fresh_start(self, say: Say, smoke: bool = True) -> dict[str, Any]:
        """Bring the stack up; when it already is, up to date and healthy, change nothing and say so."""
        procs = self.processes()
        if procs and all(p["statename"] == "RUNNING" for p in procs.values()) and self.running_matches():
            health = self.health()
            if all(v == "ready" for v in health.values()):
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
            if started or self.supervisor_up():
                say("stopping what was started")
                self.teardown(lambda _m: None)
            raise
        return {"changed": True, "health": self.health()}

    def preflight_ports(self) -> None:
        for service, port in self.ports.items():
            holder = port_holder(port)
            if holder is not None:
                raise UserError(
                    f"port {port} ({service}) is already in use by {holder}; stop it, or give {service} another "
                    f"port in {self.target.path}/group_vars/all.yml (local_ports.{service}); nothing was started",
                    CONFLICT)

    def _start_all(self, say: Say, started: list[str]) -> None:
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        conf = self.render_conf()
        self.conf.write_text(conf)
        with _step(say, "supervisor"):
            subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], check=True)
            probes.until(lambda: _assert(self.supervisor_up()), 15, "supervisord")
        (self.dir / "stack.json").write_text(json.dumps({"conf_sha256": _sha(conf), "target": self.target.name}))
        with _step(say, f"broker on {self.bootstrap}"):
            self._start(["broker"], started)
        with _step(say, f"topic {self.topic}"):
            ensure_topic(self.bootstrap, self.topic, int(self.target.get("kafka_topic_partitions", 3)))
        with _step(say, "catalogue seeded"):
            out = subprocess.run([sys.executable, "-m", "metalmart", "seed"], capture_output=True, text=True,
                                 env={**os.environ, "DATABASE_URL": self.database_url})
            if out.returncode != 0:
                raise UserError(f"seeding the catalogue failed: {out.stderr.strip().splitlines()[-1:]}", NOT_READY)
        with _step(say, "order, catalogue, processor, storefront"):
            self._start(["order", "catalogue", "processor", "storefront"], started)

    def _start(self, services: list[str], started: list[str]) -> None:
        rpc = self.rpc()
        for service in services:
            rpc.supervisor.startProcess(service, False)
            started.append(service)
        timeout = float(self.target.get("local_ready_timeout", 30))
        for service in services:
            try:
                probes.until(lambda s=service: self._ready_or_dead(s), timeout, service)
            except probes.NotReady as exc:
                raise UserError(f"{service} did not become ready ({exc}); its last log lines:\n"
                                f"{tail(self.log_path(service))}\nfull log: {self.log_path(service)}",
                                NOT_READY) from None

    def _ready_or_dead(self, service: str) -> None:
        info = self.rpc().supervisor.getProcessInfo(service)
        if info["statename"] in ("FATAL", "EXITED", "BACKOFF"):
            raise probes.NotReady(f"{service} is {info['statename']}")
        self.check(service)

    def smoke_order(self, say: Say, timeout: float = 60.0) -> dict[str, Any]:
        """One order from the order service to `shipped`, through the broker and the processor."""
        with _step(say, "smoke order shipped"):
            try:
                return smoke(self.url("order"), timeout)
            except SmokeFailed as exc:
                raise UserError(f"{exc}; the processor's last log lines:\n{tail(self.log_path('processor'))}",
                                NOT_READY) from None

    # ---- teardown -------------------------------------------------------------------------------------------------

    def teardown(self, say: Say, purge: bool = False) -> bool:
        """Stop every process and supervisord; True when something was running."""
        was_up = self.supervisor_up()
        if was_up:
            rpc = self.rpc()
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.supervisor.stopAllProcesses(True)
            pid = int((self.dir / "supervisord.pid").read_text().strip())
            with contextlib.suppress(xmlrpc.client.Fault, OSError, xmlrpc.client.ProtocolError):
                rpc.supervisor.shutdown()
            probes.until(lambda: _assert(not psutil.pid_exists(pid)), 20, "supervisord exit")
            say("stopped the local stack")
        for service, port in self.ports.items():
            probes.until(lambda p=port: _assert(port_holder(p) is None), 10, f"port {port} ({service}) released")
        for leftover in ("supervisor.sock", "supervisord.pid", "stack.json"):
            (self.dir / leftover).unlink(missing_ok=True)
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


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"  (no log at {path})"
    return "\n".join(f"  | {line}" for line in path.read_text(errors="replace").splitlines()[-lines:])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _assert(cond: bool) -> None:
    if not cond:
        raise probes.NotReady("not yet")


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in ' "%') else arg


@contextlib.contextmanager
def _step(say: Say, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    say(f"  ✓ {name} ({time.monotonic() - t0:.1f} s)")
