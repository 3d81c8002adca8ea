"""free_port: a port for one of our listeners that an outgoing connection cannot take before the listener binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from demokit import probes


def _ephemeral() -> range:
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


@pytest.mark.skipif(not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="no Linux port range here")
def test_free_ports_lie_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    ephemeral = _ephemeral()
    with socket.create_server(("127.0.0.1", 0)) as server:
        # Outgoing connections, as a test run makes by the thousand: each takes a local port from the ephemeral range.
        clients = [socket.create_connection(server.getsockname()) for _ in range(20)]
        try:
            taken = {c.getsockname()[1] for c in clients}
            assert taken <= set(ephemeral)
            picked = {probes.free_port() for _ in range(50)}
        finally:
            for c in clients:
                c.close()
    if ephemeral.start > probes.PICK_RANGE[0]:
        assert not picked & set(ephemeral)
    assert not picked & taken


def test_a_port_something_listens_on_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        busy = held.getsockname()[1]
        monkeypatch.setattr(probes, "PICK_RANGE", (busy, busy + 2))
        monkeypatch.setattr(probes, "_ephemeral_low", lambda: 65536)
        picked = {probes.free_port() for _ in range(20)}
    assert busy not in picked
    for port in picked:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing holds what was picked
