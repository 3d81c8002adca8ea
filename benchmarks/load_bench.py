"""Benchmark of the load generator: ours beside a send-then-sleep loop like the original's, in one run.

Against the stub order service (its own process, 127.0.0.1) answering in 0, 20 and 200 ms, at 20, 100, 500 and
1,000 orders/s, then a single-process ceiling cell. Prints achieved rate as a ratio of the target, send lag p99.
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
from metalmart.loadgen import FALLBACK_PRODUCTS, LoadConfig, LoadRun

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


def start_stub(delay_ms: float) -> tuple[object, str]:
    import subprocess

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.stub", "--port", str(port), "--delay-ms",
                             str(delay_ms)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    until(lambda: http_ok(f"{url}/health"), 20, "stub")
    return proc, url


def main(seconds: float = 10.0, ceiling: float = 1500.0) -> int:
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
    proc, url = start_stub(0)
    try:
        top = asyncio.run(ours(url, ceiling, seconds))
    finally:
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]
    console.print(f"single process at {ceiling:g}/s (stub 0 ms): achieved {top['achieved']:.1f}/s = "
                  f"{top['achieved'] / ceiling:.4f} of target, send lag p99 {top['lag_p99']:.2f} ms, "
                  f"dropped {int(top['dropped'])}, failed {int(top['failed'])}")
    console.print(f"worst ours ÷ target over the grid: {worst:.4f} (goal ≥ 0.99)")
    return 0
