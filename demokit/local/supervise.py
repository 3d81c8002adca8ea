"""A private supervisord for a set of local processes, driven over its XML-RPC socket: the `local` target's stack
and the test control plane both run under one. Programs are written from data into supervisord.conf; a hash of it
tells whether what runs matches what is wanted."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from supervisor.xmlrpc import SupervisorTransport

from demokit import probes
from demokit.errors import NOT_READY, UserError

# A Unix socket's path holds at most 107 bytes on Linux (108 with the terminating NUL); a little margin.
SOCKET_PATH_MAX = 100


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    autorestart: bool = True
    stopsignal: str = "TERM"
    stopwaitsecs: int = 15


@dataclass(frozen=True)
class Supervisor:
    dir: Path

    @property
    def socket(self) -> Path:
        """supervisord's socket in its folder; in the temporary folder, named after that folder, when the path would
        pass what a Unix socket's path may hold (107 bytes): a clone in a deep folder still starts."""
        beside = self.dir / "supervisor.sock"
        if len(str(beside)) <= SOCKET_PATH_MAX:
            return beside
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"metalmart-supervisor-{digest}.sock"

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.dir / "supervisord.pid"

    @property
    def stamp(self) -> Path:
        return self.dir / "stack.json"

    def log_path(self, program: str) -> Path:
        return self.dir / "logs" / f"{program}.log"

    def render(self, programs: list[Program]) -> str:
        cp = configparser.ConfigParser(interpolation=None)
        cp["unix_http_server"] = {"file": str(self.socket), "chmod": "0700"}
        cp["supervisord"] = {"logfile": str(self.dir / "logs" / "supervisord.log"), "pidfile": str(self.pidfile),
                             "childlogdir": str(self.dir / "logs"), "nodaemon": "false", "silent": "true"}
        cp["rpcinterface:supervisor"] = {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
        cp["supervisorctl"] = {"serverurl": f"unix://{self.socket}"}
        for p in programs:
            cp[f"program:{p.name}"] = {
                "command": " ".join(_quote(a) for a in p.command),
                "directory": str(self.dir), "environment": ",".join(f'{k}="{v}"' for k, v in p.env.items()),
                "autostart": "false", "autorestart": str(p.autorestart).lower(), "startsecs": "1",
                "startretries": "3", "stopsignal": p.stopsignal, "stopwaitsecs": str(p.stopwaitsecs),
                "stopasgroup": "true", "killasgroup": "true", "redirect_stderr": "true",
                "stdout_logfile": str(self.log_path(p.name)), "stdout_logfile_maxbytes": "20MB",
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

    def up(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
            return False

    def processes(self) -> dict[str, dict[str, Any]]:
        if not self.up():
            return {}
        return {p["name"]: p for p in self.rpc().supervisor.getAllProcessInfo()}

    def all_running(self) -> bool:
        """supervisord is up and every one of its programs is RUNNING."""
        procs = self.processes()
        return bool(procs) and all(p["statename"] == "RUNNING" for p in procs.values())

    def until(self, check: Callable[[], Any], timeout: float, what: str, failure: str,
              logs: tuple[str, ...]) -> Any:
        """`probes.until(check, ...)` that gives up at once when a program has died; either way one UserError
        starting with `failure`, followed by the last lines of the `logs` programs' logs."""
        def alive_then_check() -> Any:
            for name, info in self.processes().items():
                if info["statename"] in ("FATAL", "EXITED", "BACKOFF"):
                    raise UserError(f"{name} is {info['statename']}", NOT_READY)
            return check()

        try:
            return probes.until(alive_then_check, timeout, what)
        except (UserError, probes.NotReady) as exc:
            tails = "\n".join(f"{name}:\n{tail(self.log_path(name), 8)}" for name in logs
                              if self.log_path(name).exists())
            raise UserError(f"{failure}: {exc}\n{tails}", NOT_READY) from None

    def matches(self, programs: list[Program]) -> bool:
        """The running supervisord was started from exactly this configuration."""
        return self.stamp.exists() and json.loads(self.stamp.read_text()).get("conf_sha256") == \
            _sha(self.render(programs))

    def stamp_with(self, programs: list[Program]) -> None:
        """Record that what runs now is this configuration (after a reload that restarted some programs)."""
        data = json.loads(self.stamp.read_text()) if self.stamp.exists() else {}
        self.stamp.write_text(json.dumps({**data, "conf_sha256": _sha(self.render(programs))}))

    def launch(self, programs: list[Program], **stamp: Any) -> None:
        """Write the configuration and start supervisord (no program yet: `start` them in order)."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.render(programs)
        self.conf.write_text(conf)
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], check=True)
        probes.until(lambda: probes.holds(self.up()), 15, "supervisord")
        self.stamp.write_text(json.dumps({"conf_sha256": _sha(conf), **stamp}))

    def start(self, names: list[str]) -> None:
        rpc = self.rpc()
        for name in names:
            rpc.supervisor.startProcess(name, False)

    def pid(self, name: str) -> int:
        return int(self.rpc().supervisor.getProcessInfo(name)["pid"])

    def state(self, name: str) -> str:
        return str(self.rpc().supervisor.getProcessInfo(name)["statename"])

    def shutdown(self) -> bool:
        """Stop every program and supervisord itself; True when it was running."""
        was_up = self.up()
        if was_up:
            rpc = self.rpc()
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.supervisor.stopAllProcesses(True)
            pid = int(self.pidfile.read_text().strip())
            with contextlib.suppress(xmlrpc.client.Fault, OSError, xmlrpc.client.ProtocolError):
                rpc.supervisor.shutdown()
            probes.until(lambda: probes.holds(not psutil.pid_exists(pid)), 20, "supervisord exit")
        for leftover in (self.socket, self.pidfile, self.stamp):
            leftover.unlink(missing_ok=True)
        return was_up


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"  (no log at {path})"
    return "\n".join(f"  | {line}" for line in path.read_text(errors="replace").splitlines()[-lines:])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in ' "%') else arg
