"""Apache Kafka without Docker: the broker's jars from Maven Central at the version the cluster's image runs, each
checked against its SHA-256 in `apache-kafka-<version>.lock`, cached under `~/.cache/metalmart/kafka/<version>/`,
and run as one KRaft node (broker and controller in one process) on 127.0.0.1. The tests run against it, and the
`local` target can too (`local_kafka: apache`). It needs Java 17 or newer.

`python -m demokit.kafka.apache lock` resolves the dependencies again with Maven and rewrites the lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from demokit.errors import NOT_READY, UNREACHABLE, UserError

VERSION = "3.9.1"  # the apache/kafka image tag the kafka role deploys (a test keeps the two in step)
SCALA = "2.13"
LOCK = Path(__file__).with_name(f"apache-kafka-{VERSION}.lock")
REPOSITORY = "https://repo1.maven.org/maven2"
JAVA_MIN = 17
CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qg"  # a KRaft cluster id (base64 UUID): an identifier, not a secret
Say = Callable[[str], None]


@dataclass(frozen=True)
class Artifact:
    group: str
    name: str
    version: str
    sha256: str

    @property
    def file(self) -> str:
        return f"{self.name}-{self.version}.jar"

    def url(self, repository: str) -> str:
        return f"{repository}/{self.group.replace('.', '/')}/{self.name}/{self.version}/{self.file}"


def artifacts() -> list[Artifact]:
    found = []
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            coordinates, sha = line.split()
            group, name, version = coordinates.split(":")
            found.append(Artifact(group, name, version, sha))
    return found


def cache_dir() -> Path:
    base = os.environ.get("METALMART_KAFKA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "kafka")
    return Path(base) / VERSION


def repository() -> str:
    return os.environ.get("METALMART_MAVEN_REPOSITORY", REPOSITORY).rstrip("/")


def _fetch(artifact: Artifact, lib: Path) -> None:
    target = lib / artifact.file
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == artifact.sha256:
        return
    url = artifact.url(repository())
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            data = answer.read()
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"could not fetch Apache Kafka's {artifact.file} from {repository()} ({exc}); check the "
                        "network, or set METALMART_MAVEN_REPOSITORY to a Maven mirror you can reach",
                        UNREACHABLE) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise UserError(f"{artifact.file} from {repository()} has SHA-256 {digest[:16]}…, not the locked "
                        f"{artifact.sha256[:16]}…: the download or the mirror is not the real artifact; remove "
                        f"{lib} and try again, or use another METALMART_MAVEN_REPOSITORY", UNREACHABLE)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)


def ensure(say: Say) -> Path:
    """The broker's jars, fetched once and checked; returns the folder holding them."""
    lib = cache_dir() / "lib"
    wanted = artifacts()
    if (lib / ".complete").is_file() and (lib / ".complete").read_text() == LOCK.read_text():
        return lib
    lib.mkdir(parents=True, exist_ok=True)
    say(f"kafka: fetching Apache Kafka {VERSION} ({len(wanted)} jars) from {repository()} into {lib}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda a: _fetch(a, lib), wanted))
    (lib / ".complete").write_text(LOCK.read_text())
    return lib


def java() -> str:
    """A Java 17+ to run the broker with: JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise UserError(f"Apache Kafka needs Java {JAVA_MIN} or newer and there is none: install it (e.g. "
                        "'apt-get install openjdk-17-jre-headless', 'brew install openjdk@17') or set JAVA_HOME",
                        NOT_READY)
    done = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    major = int(found.group(1)) if found else 0
    major = int(found.group(2) or 0) if major == 1 and found else major  # "1.8.0" is Java 8
    if major < JAVA_MIN:
        raise UserError(f"Apache Kafka needs Java {JAVA_MIN} or newer; {candidate} is Java {major or '?'}: install "
                        f"a newer one (e.g. 'apt-get install openjdk-17-jre-headless') or set JAVA_HOME", NOT_READY)
    return candidate


def properties(data: Path, port: int, controller_port: int, host: str = "127.0.0.1", partitions: int = 1,
               advertised_port: int | None = None) -> dict[str, str]:
    """One KRaft node on `host` (advertised with another port when a tunnel stands between it and its clients).
    Topics are never created by a client's request: a missing topic is a problem to report, not something to make
    with defaults (the cluster's broker is set the same way)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{advertised_port or port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data / "logs"),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }


LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


class Node:
    """One broker's folder: its configuration, its formatted log directory, and the command that runs it."""

    def __init__(self, data: Path, port: int, controller_port: int, heap_mb: int = 512,
                 advertised_port: int | None = None) -> None:
        self.data, self.port, self.controller_port, self.heap_mb = data, port, controller_port, heap_mb
        self.advertised_port = advertised_port
        self.config = data / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self, say: Say) -> None:
        """Fetch the jars, write the configuration and format the log directory (kept when already formatted:
        offsets and data survive a restart, as on the cluster's volume)."""
        lib = ensure(say)
        self.data.mkdir(parents=True, exist_ok=True)
        self.config.write_text("".join(f"{k}={v}\n" for k, v in properties(
            self.data, self.port, self.controller_port, advertised_port=self.advertised_port).items()))
        (self.data / "log4j.properties").write_text(LOG4J)
        if (self.data / "logs" / "meta.properties").is_file():
            return
        done = subprocess.run([*self._java(lib), "kafka.tools.StorageTool", "format", "--cluster-id", CLUSTER_ID,
                               "--config", str(self.config), "--ignore-formatted"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise UserError(f"formatting Apache Kafka's log directory {self.data / 'logs'} failed: {tail}", NOT_READY)

    def _java(self, lib: Path) -> list[str]:
        return [java(), f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{self.data / 'log4j.properties'}",
                "-cp", f"{lib}/*"]

    def command(self) -> list[str]:
        """The broker in the foreground (supervisor or a test runs it); prepare() first."""
        return [*self._java(cache_dir() / "lib"), "kafka.Kafka", str(self.config)]


def lock() -> None:
    """Resolve kafka_2.13, the kafka-tools jar alone (TopicCommand, what the topic Job runs) and a log4j binding
    with Maven again, and rewrite the lock (a developer's step)."""
    pom = f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>local</groupId><artifactId>kafka-lock</artifactId><version>1</version><dependencies>
<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA}</artifactId><version>{VERSION}</version>
</dependency><dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{VERSION}</version>
<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions></dependency>
<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version>
</dependency></dependencies></project>"""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pom.xml").write_text(pom)
        subprocess.run(["mvn", "-q", "-B", "dependency:list", "-DincludeScope=runtime", "-DoutputFile=deps.txt",
                        "-Dmdep.outputScope=false", "dependency:copy-dependencies", "-DoutputDirectory=lib"],
                       cwd=tmp, check=True)
        lines = []
        for entry in sorted(re.findall(r"^\s+(\S+:\S+:jar:\S+)", (Path(tmp) / "deps.txt").read_text(), re.M)):
            group, name, _, version = entry.split(":")[:4]
            digest = hashlib.sha256((Path(tmp) / "lib" / f"{name}-{version}.jar").read_bytes()).hexdigest()
            lines.append(f"{group}:{name}:{version} {digest}")
    LOCK.write_text(f"# Apache Kafka {VERSION}'s broker (org.apache.kafka:kafka_{SCALA}) and its runtime dependencies, "
                    "kafka-tools alone and a log4j\n# binding, resolved from Maven Central (python -m "
                    "demokit.kafka.apache lock), each with its SHA-256.\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["lock"]:
        lock()
    else:
        print(ensure(print))
