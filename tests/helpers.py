"""Test helpers: real processes, real broker, real databases, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition

from demokit.kafka import ensure_topic, tansu_command
from demokit.local import localstack
from demokit.probes import free_port, holds, http_ok, port_open, until, wait_broker
from metalmart import db as dbmod

ROOT = Path(__file__).resolve().parents[1]
# ./run without the venv bootstrap: the project's command line (demokit.cli) in this Python.
RUN = [sys.executable, str(ROOT / "tasks.py")]


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None, log_dir: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=str(self.cwd))
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        code = self.popen.returncode
        self.popen = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def service(name: str, env: dict[str, str], log_dir: Path, app_dir: Path = ROOT) -> Proc:
    """A MetalMart service; `app_dir` is the checkout whose `metalmart` it runs (a benchmark's other side)."""
    return Proc(name, [sys.executable, "-m", "metalmart", name], env, log_dir, cwd=app_dir)


class TansuBroker:
    """A Tansu broker on its own port (the `local` target's default). Its memory storage starts empty after a
    restart, and it creates a topic a client asks for."""

    kind = "tansu"

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.proc = Proc("tansu", tansu_command(self.port), {"RUST_LOG": "warn"}, log_dir)

    def start(self) -> TansuBroker:
        self.proc.start()
        wait_broker(self.bootstrap, 20)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stopped with `sig` and started again on the same port (its memory storage empty)."""
        self.proc.stop(sig)
        self.proc = Proc("tansu", tansu_command(self.port), {"RUST_LOG": "warn"}, self.log_dir)
        self.start()


class KafkaBroker:
    """Apache Kafka (the clusters' broker), one KRaft node from the pinned jars, on its own ports and log directory:
    its topics, offsets and groups survive a restart, and it creates no topic a client merely asks for."""

    kind = "apache"

    def __init__(self, log_dir: Path, data: Path | None = None, advertised_port: int | None = None) -> None:
        from demokit.kafka import apache

        self.data = data or Path(tempfile.mkdtemp(prefix="metalmart-kafka-"))
        self.node = apache.Node(self.data, free_port(), free_port(), heap_mb=512, advertised_port=advertised_port)
        self.port = self.node.port
        self.bootstrap = self.node.bootstrap
        self.log_dir = log_dir
        self.proc: Proc | None = None

    def start(self) -> KafkaBroker:
        self.node.prepare(lambda m: print(m, file=sys.stderr))
        self.proc = Proc("kafka", self.node.command(), None, self.log_dir).start()
        if self.node.advertised_port is None:
            wait_broker(self.bootstrap, 60)
        else:  # its clients come through a tunnel to the advertised port; here, the listener answering is enough
            until(lambda: holds(port_open("127.0.0.1", self.port)), 60, "Apache Kafka's listener")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stopped with `sig` (SIGKILL: a crash) and started again on the same ports and log directory."""
        if self.proc is not None:
            self.proc.stop(sig, timeout=30)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class ExternalBroker:
    """A broker the tests did not start (METALMART_TEST_BOOTSTRAP): used, never stopped."""

    kind = "external"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.port = int(bootstrap.rsplit(":", 1)[1])


Broker = KafkaBroker | TansuBroker | ExternalBroker


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A private PostgreSQL server in a temporary directory (as the `postgres` user when we are root)."""

    def __init__(self, log_dir: Path) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed; `./run test` installs it (scripts/ensure-test-deps.sh)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="metalmart-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, str(bindir / "initdb"), "-D", str(self.dir / "data"), "-U", "metalmart",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        self.proc = Proc("postgres", [*self.as_user, str(bindir / "postgres"), "-D", str(self.dir / "data"),
                                      "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir),
                                      "-c", "max_connections=200"], None, log_dir)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://metalmart@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        import psycopg

        self.proc.start()
        until(lambda: psycopg.connect(self.url(), connect_timeout=2).close(), 30, "PostgreSQL")
        return self

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _shutdown(self) -> None:
        """Fast shutdown, signalled to the server itself: as root it runs under runuser, which does not pass SIGINT
        on (the server would go on answering)."""
        pidfile = self.dir / "data" / "postmaster.pid"
        if self.proc.alive() and pidfile.is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
        self.proc.stop(signal.SIGINT)

    def pause(self) -> None:
        """Stop the server (fast shutdown), keeping its data: clients are refused until `resume`."""
        self._shutdown()
        until(lambda: holds(not port_open("127.0.0.1", self.port)), 15, "PostgreSQL stopped")

    def resume(self) -> None:
        self.start()

    def stop(self) -> None:
        self._shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)


def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read the service's database directly, to check what was really stored."""

    async def go() -> list[dict[str, Any]]:
        database = dbmod.connect(url, 1)
        await database.open()
        try:
            async with database.transaction() as tx:
                return await tx.fetchall(query, params)
        finally:
            await database.close()

    return asyncio.run(go())


# ---- inventories ----------------------------------------------------------------------------------------------

def inventory(root: Path, base: str = "minikube", name: str | None = None, **values: Any) -> Path:
    """A copy of inventories/<base> as <root>/inventories/<name> with `values` over its group_vars (a value of None
    removes the variable); returns <root>/inventories, the folder to hand to `targets.load` or
    INVOKE_METALMART_INVENTORIES."""
    import yaml

    folder = root / "inventories" / (name or base)
    (folder / "group_vars").mkdir(parents=True)
    (folder / "hosts.yml").write_text((ROOT / "inventories" / base / "hosts.yml").read_text())
    merged = {**yaml.safe_load((ROOT / "inventories" / base / "group_vars" / "all.yml").read_text()), **values}
    (folder / "group_vars" / "all.yml").write_text(yaml.safe_dump({k: v for k, v in merged.items() if v is not None}))
    return root / "inventories"


class LocalTarget:
    """A `local` target of a test's own: its own ports, state folder and inventory (a developer's stack is left
    alone), driven through ./run."""

    def __init__(self, base: Path, **overrides: Any) -> None:
        self.state = base / "state"
        self.ports = {name: free_port() for name in (*localstack.names(), "kafka_controller")}
        self.inventories = inventory(base, "local", local_state_dir=str(self.state), local_ports=self.ports,
                                     **overrides)
        self.env = {**os.environ, "INVOKE_METALMART_INVENTORIES": str(self.inventories),
                    "PATH": path_without_minikube()}

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RUN, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*RUN, *args], cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self) -> dict[str, Any]:
        done = self.run("status", "--target", "local", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def listening(self) -> list[int]:
        return [p for p in self.ports.values() if port_open("127.0.0.1", p)]

    def stack_processes(self) -> list[psutil.Process]:
        mine = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                port = (proc.info["environ"] or {}).get("PORT")
                ours = str(self.state) in cmd or f":{self.ports['broker']}" in cmd
                if ours or ("metalmart" in cmd and port in {str(p) for p in self.ports.values()}):
                    mine.append(proc)
            except psutil.Error:
                continue
        return mine


def path_without_minikube() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(d) / "minikube").exists())


# ---- HTTP ---------------------------------------------------------------------------------------------------------

def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                         **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def order_body(email: str, quantity: int = 1, price: float = 10.0) -> dict[str, Any]:
    return {
        "customer_email": email,
        "customer_name": "Ada Smith",
        "shipping_address": {"street": "1 Forge Lane", "city": "Sheffield", "state": "", "zip_code": "S1 2AB",
                             "country": "GB"},
        "items": [{"product_id": "MM-ANVIL-01", "product_name": "Anvil", "quantity": quantity, "price": price}],
        "reservation_id": "",
    }


def post_orders(base: str, emails: list[str], workers: int = 16) -> list[dict[str, Any]]:
    def one(email: str) -> dict[str, Any]:
        status, body = request("POST", f"{base}/api/orders", order_body(email))
        assert status == 201, (status, body)
        return body

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, emails))


# ---- Kafka --------------------------------------------------------------------------------------------------------

def shipping_seconds(base: str) -> float:
    """created → shipped of one new order placed at the order service `base`, from the order's own history (the
    service's clock)."""
    from datetime import datetime

    order = post_orders(base, ["timing@metalbear.com"])[0]

    def shipped() -> dict[str, Any]:
        body = http_ok(f"{base}/api/orders/{order['id']}", timeout=5)
        assert body["status"] == "shipped", body["status"]
        return body

    body = until(shipped, 60, "the order shipped")
    at = {h["status"]: datetime.fromisoformat(h["at"].replace("Z", "+00:00")) for h in body["history"]}
    return (at["shipped"] - at["pending"]).total_seconds()


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    """Every message of a topic from the start (assigned partitions, no group), until `expect` arrived."""
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    partitions = list(meta.topics[topic].partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    got: list[Any] = []
    try:
        def more() -> None:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    got.append(msg)
            if len(got) < expect:
                raise AssertionError(f"{len(got)} of {expect} messages so far")

        until(more, timeout, f"{expect} messages on {topic}", max_interval=0.05)
    finally:
        consumer.close()
    return got


def new_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, name, partitions)
    return name


class AppStack:
    """The order service and the processor against one database and topic."""

    def __init__(self, bootstrap: str, database_url: str, log_dir: Path, demo: bool = True,
                 concurrency: int = 1024, partitions: int = 3, order_env: dict[str, str] | None = None,
                 app_dir: Path = ROOT) -> None:
        self.bootstrap = bootstrap
        self.app_dir = app_dir
        self.database_url = database_url
        self.topic = new_topic(bootstrap, partitions)
        self.group = f"processor-{uuid.uuid4().hex[:6]}"
        self.order_port = free_port()
        self.base = f"http://127.0.0.1:{self.order_port}"
        common = {"KAFKA_BROKERS": bootstrap, "KAFKA_TOPIC": self.topic, "DATABASE_URL": database_url}
        self.order_env = {**common, "KAFKA_SESSION_TIMEOUT_MS": "6000", **(order_env or {})}
        self.order = service("order", {**self.order_env, "PORT": str(self.order_port)}, log_dir, app_dir)
        self.processor_env = {**common, "KAFKA_GROUP_ID": self.group, "ORDER_SERVICE_URL": self.base,
                              "DEMO_MODE": "true" if demo else "false", "PROCESSOR_CONCURRENCY": str(concurrency),
                              "KAFKA_SESSION_TIMEOUT_MS": "6000", "PORT": str(free_port())}
        self.log_dir = log_dir
        self.processor = service("processor", self.processor_env, log_dir, app_dir)

    def start(self, processor: bool = True) -> AppStack:
        self.order.start()
        until(lambda: http_ok(f"{self.base}/ready"), 30, "order service")
        if processor:
            self.start_processor()
        return self

    def replica(self) -> tuple[Proc, str]:
        """A second order service on the same database and topic; returns it and its URL."""
        port = free_port()
        proc = service("order", {**self.order_env, "PORT": str(port)}, self.log_dir).start()
        until(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 30, "order service replica")
        return proc, f"http://127.0.0.1:{port}"

    def start_processor(self) -> Proc:
        self.processor = service("processor", self.processor_env, self.log_dir, self.app_dir).start()
        port = self.processor_env["PORT"]
        until(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 30, "processor joined its group")
        return self.processor

    def processor_health(self) -> dict[str, Any]:
        return http_ok(f"http://127.0.0.1:{self.processor_env['PORT']}/health")

    def stats(self) -> dict[str, Any]:
        return http_ok(f"{self.base}/api/orders/stats")

    def wait_shipped(self, count: int, timeout: float = 60.0) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            s = self.stats()
            if s["by_status"].get("shipped", 0) != count:
                raise AssertionError(f"shipped {s['by_status']} of {count}")
            return s

        return until(check, timeout, f"{count} orders shipped")

    def stop(self) -> None:
        self.processor.stop()
        self.order.stop()


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines()
