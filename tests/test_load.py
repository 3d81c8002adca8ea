"""The load generator through `./run load`, against a stub order service in its own process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demokit.probes import free_port, http_ok, until
from tests.helpers import ROOT, RUN, Proc

pytestmark = pytest.mark.stack  # ./run load


class Stub:
    def __init__(self, log_dir: Path, delay_ms: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc("stub", [sys.executable, "-m", "benchmarks.stub", "--port", str(self.port),
                                  "--delay-ms", str(delay_ms)], None, log_dir).start()
        until(lambda: http_ok(f"{self.url}/health"), 20, "stub")

    def emails(self) -> list[str]:
        return http_ok(f"{self.url}/_emails")  # type: ignore[return-value]


@pytest.fixture
def stub(log_dir: Path) -> Iterator[Stub]:
    s = Stub(log_dir)
    yield s
    s.proc.stop()


def load(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, "load", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start_load(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*RUN, "load", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def report(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert data["scheduled"] == data["sent"] + data["dropped"]
    assert data["sent"] == data["succeeded"] + data["failed"]
    return data


def test_rate_accounting_and_report(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = load("--rate", "40", "--duration", "2.5", "--base-url", stub.url, "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = report(out)
    assert set(data) >= {"target_rate", "duration_s", "scheduled", "sent", "succeeded", "failed", "dropped",
                         "achieved_rate", "latency_ms", "send_lag_ms", "errors", "status_codes", "base_url",
                         "run_id", "started_at"}
    assert (data["scheduled"], data["succeeded"], data["dropped"]) == (100, 100, 0)
    assert data["status_codes"] == {"201": 100}
    assert abs(data["achieved_rate"] - 40) < 0.4
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "max"}
    emails = stub.emails()
    assert len(set(emails)) == 100, "every e-mail in a run is unique"
    assert all(data["run_id"] in e and e.endswith("@metalbear.com") for e in emails)
    assert "achieved rate" in done.stdout  # the summary table


def test_match_ratio_and_email_user(stub: Stub, tmp_path: Path) -> None:
    done = load("--rate", "100", "--duration", "1", "--base-url", stub.url, "--match-ratio", "0.25",
                "--email-user", "alice", "--email-domain", "metalbear.com")
    assert done.returncode == 0, done.stderr
    emails = stub.emails()
    assert len(emails) == 100
    assert sum(e.endswith("@metalbear.com") for e in emails) == 25
    assert all(e.startswith("alice+") for e in emails)


def test_a_full_in_flight_limit_drops_and_counts(log_dir: Path, tmp_path: Path) -> None:
    slow = Stub(log_dir, delay_ms=1000)
    try:
        out = tmp_path / "r.json"
        done = load("--rate", "50", "--duration", "1", "--base-url", slow.url, "--max-inflight", "5",
                    "--json", str(out))
        assert done.returncode == 0, done.stderr
        data = report(out)
        assert data["scheduled"] == 50
        assert data["sent"] == 5
        assert data["dropped"] == 45
        assert data["latency_ms"]["p50"] >= 1000
    finally:
        slow.proc.stop()


def test_a_service_dying_mid_run_is_counted_as_failures(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = start_load("--rate", "50", "--duration", "3", "--base-url", stub.url, "--json", str(out))
    until(lambda: _at_least(stub, 20), 20, "20 orders arrived")
    stub.proc.stop(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    data = report(out)
    assert data["scheduled"] == 150
    assert data["failed"] > 0
    assert set(data["errors"]) <= {"refused", "disconnected"}


def _at_least(stub: Stub, n: int) -> None:
    assert len(stub.emails()) >= n


def test_refused_target_fails_in_one_line() -> None:
    port = free_port()
    done = load("--rate", "10", "--duration", "5", "--base-url", f"http://127.0.0.1:{port}")
    assert done.returncode == 3
    assert f"cannot reach the order service at http://127.0.0.1:{port}/health (refused" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_target_that_never_answers_is_given_up_on() -> None:
    """The check before the first order is bounded (5 s): a socket that accepts and never answers ends in a
    one-line timeout error, not a hang (the subprocess timeout guards the test)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # never accepted, never answered
        port = silent.getsockname()[1]
        done = load("--rate", "10", "--duration", "5", "--base-url", f"http://127.0.0.1:{port}", timeout=30)
    assert done.returncode == 3
    assert "(timeout" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be a number above 0"),
        (["--duration", "-3"], "--duration must be seconds above 0"),
        (["--match-ratio", "1.5"], "--match-ratio must be between 0 and 1"),
        (["--email-user", "a@b"], "--email-user must be a plain name"),
        (["--base-url", "localhost:8084"], "--base-url must start with http://"),
        (["--workers", "0"], "--workers must be between 1 and 64"),
    ],
)
def test_invalid_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    base = ["--base-url", "http://127.0.0.1:9"] if "--base-url" not in args else []
    done = load(*base, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_ctrl_c_exits_130_with_a_summary_that_adds_up(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = start_load("--rate", "20", "--duration", "60", "--base-url", stub.url, "--json", str(out))
    until(lambda: _at_least(stub, 10), 20, "10 orders arrived")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "achieved rate" in stdout
    data = report(out)
    assert data["interrupted"] is True
    assert 10 <= data["scheduled"] < 1200


def test_the_original_command_line_still_works(stub: Stub) -> None:
    done = subprocess.run([sys.executable, "scripts/load_generator.py", "20", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "BASE_URL": stub.url})
    assert done.returncode == 0, done.stderr
    assert len(stub.emails()) == 20


def test_the_presets_are_the_guides_table_and_explicit_values_win() -> None:
    from demokit.tasks.load import rate_and_duration

    table = {p: rate_and_duration(p, None, None) for p in ("light", "medium", "heavy", "extreme")}
    assert table == {"light": (5, 60), "medium": (20, 120), "heavy": (50, 60), "extreme": (100, 30)}
    assert rate_and_duration("heavy", 7, None) == (7, 60) and rate_and_duration("light", None, 3) == (5, 3)


@pytest.mark.parametrize(("args", "scheduled"), [
    (["--preset", "extreme", "--duration", "0.5"], 50),      # the preset's 100/s
    (["--preset", "light", "--duration", "1"], 5),           # the preset's 5/s
    (["--preset", "heavy", "--rate", "10", "--duration", "1"], 10),  # explicit --rate wins
    (["--duration", "1"], 20),                               # no preset: medium's 20/s
])
def test_a_preset_schedules_what_the_table_says(stub: Stub, tmp_path: Path, args: list[str], scheduled: int) -> None:
    out = tmp_path / "report.json"
    done = load(*args, "--base-url", stub.url, "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert report(out)["scheduled"] == scheduled == len(stub.emails())


def test_an_unknown_preset_is_one_line_and_exit_2() -> None:
    done = load("--preset", "turbo")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --preset must be one of light, medium, heavy, extreme (got 'turbo'); e.g. --preset medium"]


def _numbers(emails: list[str], run_id: str) -> list[int]:
    """The order number i of each e-mail (…<run id>-<i>@…)."""
    return sorted(int(e.split(f"{run_id}-")[1].split("@")[0]) for e in emails)


def _workers_of(run_id: str) -> list[str]:
    """Worker processes of a run still alive (their command line carries the run id)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker" in argv and run_id.encode() in argv:
            found.append(cmdline.parent.name)
    return found


def test_workers_share_one_schedule_and_one_report(stub: Stub, tmp_path: Path) -> None:
    """Two processes send every order exactly once, at the rate asked for, and the report is one: counts and
    histograms merged, the sends even across 100 ms windows."""
    out = tmp_path / "report.json"
    done = load("--rate", "400", "--duration", "2", "--workers", "2", "--base-url", stub.url, "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = report(out)
    assert (data["scheduled"], data["succeeded"], data["workers"]) == (800, 800, 2)
    assert "2 worker processes" in done.stderr
    assert _numbers(stub.emails(), data["run_id"]) == list(range(800)), "each order sent once, none missing"
    assert abs(data["achieved_rate"] - 400) < 4
    assert data["latency_ms"]["p50"] > 0 and data["send_lag_ms"]["p99"] > 0
    assert data["send_evenness"]["busiest"] >= data["send_evenness"]["mean"] == 40
    assert not _workers_of(data["run_id"])


def test_ctrl_c_stops_every_worker_and_the_summary_adds_up(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = start_load("--rate", "50", "--duration", "60", "--workers", "2", "--base-url", stub.url,
                      "--json", str(out))
    until(lambda: _at_least(stub, 20), 30, "20 orders arrived")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "achieved rate" in stdout
    data = report(out)
    assert data["interrupted"] is True and 20 <= data["scheduled"] < 3000
    assert data["succeeded"] == len(stub.emails()), "every order the stub saw is in the summary, once"
    assert not _workers_of(data["run_id"]), "no worker outlives the run"


def test_a_worker_killed_mid_run_is_counted_and_the_rest_finish(stub: Stub, tmp_path: Path) -> None:
    """kill -9 of one worker: the other sends all of its orders, the report names the lost worker, and what the
    dead one had in flight is counted failed (its answers are unknown)."""
    out = tmp_path / "r.json"
    proc = start_load("--rate", "100", "--duration", "4", "--workers", "2", "--email-user", "kim",
                      "--base-url", stub.url, "--json", str(out))
    until(lambda: _at_least(stub, 50), 30, "50 orders arrived")
    run_id = stub.emails()[0].split("+")[1].split("-")[0]
    victims = _workers_of(run_id)
    assert len(victims) == 2, victims
    os.kill(int(victims[0]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    data = report(out)
    assert len(data["lost_workers"]) == 1
    lost = data["lost_workers"][0]
    survivor = [i for i in _numbers(stub.emails(), run_id) if i % 2 != lost]
    assert survivor == list(range(1 - lost, 400, 2)), "the other worker sent every one of its orders"
    assert data["scheduled"] < 400, "the dead worker's later orders were never scheduled"
    assert data["succeeded"] <= len(stub.emails())


def test_the_image_program_runs_workers_too(stub: Stub) -> None:
    """`python -m metalmart loadgen --workers 2` (what the in-cluster Job runs): progress lines, then one report."""
    done = subprocess.run([sys.executable, "-m", "metalmart", "loadgen", "--rate", "200", "--duration", "1",
                           "--workers", "2", "--base-url", stub.url], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "report"
    assert (events[-1]["report"]["scheduled"], events[-1]["report"]["succeeded"]) == (200, 200)
    assert events[-1]["report"]["workers"] == 2
    assert len(stub.emails()) == 200
