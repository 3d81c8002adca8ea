"""`./run metrics --web`: the split, live, as a page for the shared screen. The same collector as `--watch` samples
the broker and the order service once a second; the page (server-rendered HTML and SVG, no JavaScript build chain,
nothing fetched from the internet) asks for a fresh panel every second and a half.

The page shows orders created per second and orders shipped per second by who processed them (the cluster's
processor, each mirrord session), every topic with its role and its produced/s, each consumer group's lag and
trend, the active mirrord filters and DEMO_MODE, and a named error with the fix when something does not answer."""

from __future__ import annotations

import html
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demokit.observe.metrics import Collector
from metalmart import splittopics

WINDOW_S = 300  # the time series cover the last five minutes
# Okabe–Ito: distinguishable with every common colour-vision deficiency, and on a projector.
CLUSTER, CREATED = "#56B4E9", "#F0E442"
SESSIONS = ("#E69F00", "#CC79A7", "#D55E00", "#009E73", "#0072B2")
ROLE_NAMES = {"original": "original", "mirrord-local": "mirrord session (laptop)",
              "mirrord-fallback": "mirrord fallback (cluster)"}


def _session_of(topic: str, fmt: str = splittopics.DEFAULT) -> str:
    """`mirrord-tmp-<id>-<topic>` → `<id>`: the session a temporary topic belongs to (by the operator's format)."""
    split = splittopics.parse(topic, None, fmt)
    return split[0] if split else ""


def shipped_by_who(orders: dict[str, Any] | None, fmt: str = splittopics.DEFAULT) -> dict[str, int]:
    """Orders shipped so far by who processed them: `cluster`, or `session <id>` per mirrord session."""
    who: dict[str, int] = {"cluster": 0}
    for row in (orders or {}).get("shipped_by_topic", []):
        key = "cluster" if row["processed_by"] != "mirrord" else f"session {_session_of(row['topic'], fmt) or '?'}"
        who[key] = who.get(key, 0) + int(row["shipped"])
    return who


@dataclass
class Sample:
    at: float
    snap: dict[str, Any]


@dataclass
class Dashboard:
    collector: Collector
    target: str
    filters: Callable[[], dict[str, str]]
    demo_mode: Callable[[], str]
    interval: float = 1.0
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=WINDOW_S + 2))
    _demo: tuple[float, str] = (0.0, "unknown")
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        self.samples.append(Sample(time.time(), self.collector.snapshot()))

    def run(self) -> None:
        """Sample until stopped (the thread beside the web server)."""
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))  # the sampling period

    def stop(self) -> None:
        self._stop.set()

    # -- what the page shows --

    def _demo_mode(self) -> str:
        at, value = self._demo
        if time.monotonic() - at > 10:
            try:
                value = self.demo_mode()
            except Exception as exc:  # shown on the page, never a crash of the page
                value = f"unknown ({exc})"
            self._demo = (time.monotonic(), value)
        return self._demo[1]

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Per-second rates over the window: `created`, and `shipped: <who>` for each processor seen."""
        points = list(self.samples)
        out: dict[str, list[tuple[float, float]]] = {"created": []}
        for prev, cur in itertools.pairwise(points):
            dt = max(1e-3, cur.at - prev.at)
            po, co = prev.snap.get("orders"), cur.snap.get("orders")
            if po is None or co is None:
                continue
            out["created"].append((cur.at, max(0.0, (co.get("total", 0) - po.get("total", 0)) / dt)))
            fmt = self.collector.topic_format
            before, after = shipped_by_who(po, fmt), shipped_by_who(co, fmt)
            for who, n in after.items():
                out.setdefault(f"shipped: {who}", []).append((cur.at, max(0.0, (n - before.get(who, 0)) / dt)))
        return out

    def data(self) -> dict[str, Any]:
        latest = self.samples[-1].snap if self.samples else None
        previous = self.samples[-2] if len(self.samples) > 1 else None
        topics = []
        for t in (latest or {}).get("topics", []):
            rate = None
            if previous is not None:
                before = next((x for x in previous.snap.get("topics", []) if x["name"] == t["name"]), None)
                dt = max(1e-3, self.samples[-1].at - previous.at)
                rate = (t["end_offset_total"] - before["end_offset_total"]) / dt if before else None
            topics.append({"name": t["name"], "role": t["role"], "splits": t["splits"],
                           "produced": t["end_offset_total"], "produced_per_s": rate})
        groups = []
        for g in (latest or {}).get("consumer_groups", []):
            before = next((x for x in previous.snap.get("consumer_groups", []) if x["group"] == g["group"]), None) \
                if previous else None
            trend = 0 if before is None else g["lag_total"] - before["lag_total"]
            groups.append({"group": g["group"], "lag": g["lag_total"], "trend": trend, "state": g["state"],
                           "beyond_end": g.get("beyond_end", [])})
        orders = (latest or {}).get("orders")
        return {"target": self.target, "collected_at": (latest or {}).get("collected_at"),
                "errors": (latest or {}).get("errors", {}), "topics": topics, "groups": groups,
                "orders": orders, "shipped_by": shipped_by_who(orders, self.collector.topic_format),
                "series": self.series(),
                "filters": self.filters(), "demo_mode": self._demo_mode()}

    def panel(self) -> str:
        return panel_html(self.data())


# ---- rendering ----------------------------------------------------------------------------------------------------

def _colour(name: str, sessions: list[str]) -> str:
    if name == "created":
        return CREATED
    if name == "shipped: cluster":
        return CLUSTER
    return SESSIONS[sessions.index(name) % len(SESSIONS)] if name in sessions else SESSIONS[0]


def chart_svg(series: dict[str, list[tuple[float, float]]], width: int = 1100, height: int = 300) -> str:
    """Orders per second over the window, one line per series, as inline SVG."""
    pad_l, pad_b, pad_t, pad_r = 70, 40, 16, 40
    now = max((p[0] for pts in series.values() for p in pts), default=time.time())
    first = min((p[0] for pts in series.values() for p in pts), default=now)
    span = min(WINDOW_S, max(60.0, now - first))  # the window grows with the run, up to five minutes
    top = max((p[1] for pts in series.values() for p in pts), default=0.0)
    top = max(1.0, top * 1.15)
    sessions = sorted(k for k in series if k.startswith("shipped: session"))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="orders per second">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#111"/>']
    for i in range(5):
        y = pad_t + (height - pad_t - pad_b) * i / 4
        value = top * (4 - i) / 4
        parts.append(f'<line x1="{pad_l}" y1="{y:.0f}" x2="{width}" y2="{y:.0f}" stroke="#333"/>'
                     f'<text x="{pad_l - 8}" y="{y + 6:.0f}" text-anchor="end" class="axis">{value:.0f}</text>')
    for step in range(0, 6):
        ago = span * step / 5
        x = pad_l + (width - pad_l - pad_r) * (1 - ago / span)
        label = "now" if step == 0 else f"-{ago / 60:.1f} min" if span > 120 else f"-{ago:.0f} s"
        parts.append(f'<text x="{x:.0f}" y="{height - 10}" text-anchor="middle" class="axis">{label}</text>')
    for name, points in series.items():
        if not points:
            continue
        coords = " ".join(
            f"{pad_l + (width - pad_l - pad_r) * (1 - (now - t) / span):.1f},"
            f"{pad_t + (height - pad_t - pad_b) * (1 - v / top):.1f}"
            for t, v in points if now - t <= span)
        parts.append(f'<polyline class="series" data-series="{html.escape(name)}" fill="none" '
                     f'stroke="{_colour(name, sessions)}" stroke-width="4" points="{coords}"/>')
    parts.append("</svg>")
    return "".join(parts)


def panel_html(d: dict[str, Any]) -> str:
    e = html.escape
    series = d["series"]
    sessions = sorted(k for k in series if k.startswith("shipped: session"))
    last = {k: (v[-1][1] if v else 0.0) for k, v in series.items()}
    out = ['<div id="panel" data-collected-at="' + e(str(d["collected_at"] or "")) + '">']
    for what, why in d["errors"].items():
        fix = "./run status, then ./run fresh-start" + (f" --target {d['target']}" if d["target"] else "")
        out.append(f'<div class="error" data-error="{e(what)}"><b>{e(what.replace("_", " "))} unreachable</b>: '
                   f"{e(why)} → <code>{e(fix)}</code></div>")
    if not d["collected_at"]:
        out.append('<div class="waiting">waiting for the first sample…</div>')
    legend = [("created", "orders created/s")] + [("shipped: cluster", "shipped/s by the cluster")] + \
        [(s, f"shipped/s by mirrord {s.removeprefix('shipped: ')}") for s in sessions]
    out.append('<section class="big">')
    for key, label in legend:
        out.append(f'<div class="figure" data-figure="{e(key)}"><span class="swatch" '
                   f'style="background:{_colour(key, sessions)}"></span><span class="value">'
                   f"{last.get(key, 0.0):.1f}</span><span class=\"label\">{e(label)}</span></div>")
    shipped = d["shipped_by"]
    total = sum(shipped.values())
    out.append(f'<div class="figure"><span class="value" data-total-shipped="{total}">{total}</span>'
               f'<span class="label">shipped in all: {shipped.get("cluster", 0)} by the cluster, '
               f'{total - shipped.get("cluster", 0)} by mirrord sessions</span></div></section>')
    out.append(chart_svg(series))
    out.append('<section class="tables"><table id="topics"><caption>topics</caption><tr><th>topic</th><th>role</th>'
               "<th>produced</th><th>produced/s</th></tr>")
    for t in d["topics"]:
        rate = "–" if t["produced_per_s"] is None else f"{t['produced_per_s']:.1f}"
        out.append(f'<tr data-topic="{e(t["name"])}"><td>{e(t["name"])}</td><td>{e(ROLE_NAMES[t["role"]])}</td>'
                   f'<td class="num">{t["produced"]}</td><td class="num">{rate}</td></tr>')
    out.append('</table><table id="groups"><caption>consumer groups</caption><tr><th>group</th><th>lag</th>'
               "<th>trend</th></tr>")
    for g in d["groups"]:
        arrow = "↑" if g["trend"] > 0 else "↓" if g["trend"] < 0 else "→"
        out.append(f'<tr data-group="{e(g["group"])}"><td>{e(g["group"])}</td><td class="num">{g["lag"]}</td>'
                   f'<td class="num">{arrow} {g["trend"]:+d}</td></tr>')
        if g["beyond_end"]:
            out.append(f'<tr class="problem"><td colspan="3">committed beyond the end: {e("; ".join(g["beyond_end"]))}'
                       " (restart the processor, or reset the group's offsets)</td></tr>")
    out.append("</table></section><section class=\"facts\">")
    out.append(f'<div data-demo-mode="{e(d["demo_mode"])}">DEMO_MODE <b>{e(d["demo_mode"])}</b></div>')
    if not d["filters"]:
        out.append("<div>no mirrord config in .mirrord/ (./run mirrord-config --user NAME)</div>")
    for name, regex in sorted(d["filters"].items()):
        out.append(f'<div class="filter" data-filter="{e(name)}">filter <b>{e(name)}</b>: '
                   f"<code>{e(regex)}</code></div>")
    out.append("</section></div>")
    return "".join(out)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>MetalMart: the split, live ({target})</title>
<style>
body {{ background:#000; color:#fff; font: 22px/1.35 system-ui, sans-serif; margin: 24px 36px; }}
h1 {{ font-size: 34px; margin: 0 0 12px; }}
.big {{ display:flex; flex-wrap:wrap; gap: 28px; margin: 8px 0 16px; }}
.figure {{ display:flex; align-items:baseline; gap:10px; }}
.figure .value {{ font-size: 56px; font-weight: 700; font-variant-numeric: tabular-nums; }}
.figure .label {{ color:#ddd; }}
.swatch {{ display:inline-block; width:22px; height:22px; border-radius:4px; }}
.chart {{ width: 100%; max-width: 1400px; height: auto; }}
.chart .axis {{ fill:#bbb; font-size: 18px; }}
.tables {{ display:flex; gap: 48px; flex-wrap:wrap; }}
table {{ border-collapse: collapse; margin-top: 12px; }}
caption {{ text-align:left; font-weight:700; font-size: 24px; }}
th, td {{ padding: 4px 14px; border-bottom: 1px solid #444; text-align:left; }}
td.num {{ text-align:right; font-variant-numeric: tabular-nums; }}
.error {{ background:#5a0000; border: 3px solid #ff5555; padding: 12px 16px; margin: 8px 0; font-size: 26px; }}
.waiting {{ color:#ccc; font-size: 26px; }}
.facts {{ margin-top: 18px; display:flex; gap: 36px; flex-wrap:wrap; }}
code {{ font-size: 22px; color:#F0E442; }}
</style></head>
<body><h1>MetalMart · Kafka queue splitting · {target}</h1>
{panel}
<script>
// Replace the panel every 1.5 s; keep the last one when the server does not answer.
async function refresh() {{
  try {{
    const answer = await fetch("/panel", {{cache: "no-store"}});
    if (answer.ok) {{ document.getElementById("panel").outerHTML = await answer.text(); }}
  }} catch (e) {{ /* the task stopped: the last picture stays */ }}
}}
setInterval(refresh, 1500);
</script></body></html>
"""


def page_html(board: Dashboard) -> str:
    return PAGE.format(target=html.escape(board.target), panel=board.panel())


def read_filters(folder: Path) -> dict[str, str]:
    """The filter of each mirrord config in `folder` (.mirrord/), by file name."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            split = next(iter(json.loads(path.read_text())["feature"]["split_queues"].values()))
            found[path.stem] = split["message_filter"]["customer_email"]
        except (OSError, ValueError, KeyError, StopIteration):
            continue
    return found


def serve(board: Dashboard, port: int, announce: Callable[[str], None]) -> None:
    """Serve the page on 127.0.0.1:port until Ctrl-C; the sampler runs beside it."""
    from aiohttp import web

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=page_html(board), content_type="text/html")

    async def panel(_: web.Request) -> web.Response:
        return web.Response(text=board.panel(), content_type="text/html")

    async def data(_: web.Request) -> web.Response:
        return web.json_response(board.data())

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/panel", panel)
    app.router.add_get("/data.json", data)
    sampler = threading.Thread(target=board.run, name="metrics sampler", daemon=True)
    sampler.start()
    announce(f"metrics page: http://127.0.0.1:{port}/ (Ctrl-C stops it)")
    try:
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True, access_log=None)
    finally:
        board.stop()
