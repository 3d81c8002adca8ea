"""Benchmark of the load generator: ours beside a send-then-sleep loop like the original's, in one run.

Against the stub order service (its own process, 127.0.0.1) answering in 0, 20 and 200 ms, at 20, 100, 500 and
1,000 orders/s. Prints achieved rate as a ratio of the target, send lag p99. Then the generator past one process:
one worker beside --workers N (the machine's cores) at 2,000 to 10,000 orders/s against stubs sharing one port, each
cell with the busiest 100 ms window against the mean and the goals beside them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from demokit.probes import free_port, http_ok, until
from metalmart.loadconfig import cores
from metalmart.loadgen import FALLBACK_PRODUCTS, LoadConfig, LoadRun, new_run

ROOT = Path(__file__).resolve().parents[1]


async def ours(url: str, rate: float, seconds: float) -> dict[str, float]:
    run = LoadRun(LoadConfig(rate=rate, duration=seconds, base_url=url, max_inflight=4096), FALLBACK_PRODUCTS)
    await run.run()
    r = run.report()
    return {"achieved": r["achieved_rate"], "lag_p99": r["send_lag_ms"]["p99"], "failed": r["failed"],
            "dropped": r["dropped"], "p99": r["latency_ms"]["p99"]}


async def sequential(url: str, rate: float, seconds: float) -> dict[str, float]:
    """The original's loop: send one order, wait for the answer, sleep 1000/rate ms (integer division)."""
    run = LoadRun(LoadConfig(rate=rate, duration=seconds, base_url=url), FALLBACK_PRODUCTS)
    sent = 0
    pause = (1000 // int(rate)) / 1000 if rate >= 1 else 1 / rate
    async with aiohttp.ClientSession() as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            async with http.post(f"{url}/api/orders", data=run.factory.body(sent),
                                 headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
            sent += 1
            if pause:
                await asyncio.sleep(pause)
    return {"achieved": sent / seconds}


def start_stub(delay_ms: float, processes: int = 1) -> tuple[object, str]:
    import subprocess

    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.stub", "--port", str(port), "--delay-ms",
                               str(delay_ms), *(["--reuse-port"] if processes > 1 else [])], cwd=ROOT)
             for _ in range(processes)]
    url = f"http://127.0.0.1:{port}"
    until(lambda: http_ok(f"{url}/health"), 20, "stub")
    return (procs[0] if processes == 1 else _Group(procs)), url


class _Group:
    def __init__(self, procs: list[object]) -> None:
        self.procs = procs

    def terminate(self) -> None:
        for p in self.procs:
            p.terminate()  # type: ignore[attr-defined]

    def wait(self) -> None:
        for p in self.procs:
            p.wait()  # type: ignore[attr-defined]


async def fleet(url: str, rate: float, seconds: float, workers: int) -> dict[str, float]:
    run = new_run(LoadConfig(rate=rate, duration=seconds, base_url=url, max_inflight=4096, workers=workers),
                  FALLBACK_PRODUCTS)
    await run.run()
    r = run.report()
    return {"achieved": r["achieved_rate"], "dropped": r["dropped"], "failed": r["failed"],
            "evenness": r["send_evenness"]["busiest_to_mean"], "lag_p99": r["send_lag_ms"]["p99"]}


def workers_table(console: Console, seconds: float, rates: tuple[float, ...]) -> None:
    """One worker beside N at each rate, against N stubs on one port (0 ms)."""
    n = max(2, cores())
    table = Table(title=f"load generator past one process: {seconds:g} s a cell, {n} stubs (0 ms) sharing a port, "
                        f"{cores()} cores here; goal: achieved ÷ target ≥ 0.99, busiest 100 ms ÷ mean ≤ 1.2, "
                        "nothing dropped")
    for col in ("target/s", "workers", "achieved/s", "÷ target", "busiest ÷ mean", "dropped", "failed",
                "send lag p99 ms", "goal"):
        table.add_column(col, justify="right")
    proc, url = start_stub(0, n)
    try:
        for rate in rates:
            for workers in (1, n):
                r = asyncio.run(fleet(url, rate, seconds, workers))
                held = r["achieved"] / rate >= 0.99 and r["evenness"] <= 1.2 and not r["dropped"]
                table.add_row(f"{rate:g}", str(workers), f"{r['achieved']:.1f}", f"{r['achieved'] / rate:.4f}",
                              f"{r['evenness']:.2f}", str(int(r["dropped"])), str(int(r["failed"])),
                              f"{r['lag_p99']:.1f}", "met" if held else "missed")
                console.print(f"  measured: {rate:g}/s with {workers} worker(s)")
    finally:
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]
    console.print(table)


def main(seconds: float = 10.0, rates: tuple[float, ...] = (2000.0, 5000.0, 10000.0)) -> int:
    console = Console(width=150)
    table = Table(title=f"load generator: {seconds:g} s a cell, stub on 127.0.0.1 (achieved ÷ target)")
    for col in ("stub delay", "target/s", "ours achieved/s", "ours ÷ target", "send lag p99 ms", "dropped",
                "original-style/s", "original ÷ target"):
        table.add_column(col, justify="right")
    worst = 1.0
    for delay in (0, 20, 200):
        proc, url = start_stub(delay)
        try:
            for rate in (20, 100, 500, 1000):
                a = asyncio.run(ours(url, rate, seconds))
                b = asyncio.run(sequential(url, rate, seconds))
                worst = min(worst, a["achieved"] / rate)
                table.add_row(f"{delay} ms", str(rate), f"{a['achieved']:.1f}", f"{a['achieved'] / rate:.4f}",
                              f"{a['lag_p99']:.2f}", str(int(a["dropped"])), f"{b['achieved']:.1f}",
                              f"{b['achieved'] / rate:.3f}")
                console.print(f"  measured: stub {delay} ms, {rate}/s")
        finally:
            proc.terminate()  # type: ignore[attr-defined]
            proc.wait()  # type: ignore[attr-defined]
    console.print(table)
    console.print(f"worst ours ÷ target over the grid: {worst:.4f} (goal ≥ 0.99)")
    workers_table(console, seconds, rates)
    return 0
