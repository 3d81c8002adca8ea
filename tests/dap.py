"""A small Debug Adapter Protocol client: what VS Code says to debugpy, for a test that holds a real breakpoint.

Only the requests a person's clicks make: attach, set a breakpoint, wait for it to stop, read a value in the stopped
frame, continue.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from demokit.probes import until


class DapError(RuntimeError):
    pass


class Dap:
    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        # debugpy's adapter may still be starting: connect once it listens.
        self.sock = until(lambda: socket.create_connection((host, port), timeout=5), timeout,
                          f"debugpy listening on {host}:{port}")
        self.sock.settimeout(None)
        self._buffer = b""
        self._seq = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    # ---- wire --------------------------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _read(self, timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        try:
            while b"\r\n\r\n" not in self._buffer:
                self._more()
            head, rest = self._buffer.split(b"\r\n\r\n", 1)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(rest) < length:
                self._buffer = head + b"\r\n\r\n" + rest
                self._more()
                head, rest = self._buffer.split(b"\r\n\r\n", 1)
            self._buffer = rest[length:]
            return json.loads(rest[:length])
        finally:
            self.sock.settimeout(None)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise DapError("debugpy closed the connection")
        self._buffer += chunk

    def request(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0,
                wait: bool = True) -> int:
        self._seq += 1
        self._send({"seq": self._seq, "type": "request", "command": command, "arguments": arguments or {}})
        if wait:
            self.response(self._seq, timeout)
        return self._seq

    def response(self, seq: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(max(0.1, deadline - time.monotonic()))
            if message["type"] == "event":
                self.events.append(message)
            elif message["type"] == "response" and message["request_seq"] == seq:
                if not message.get("success"):
                    raise DapError(f"{message['command']}: {message.get('message')}")
                return message.get("body") or {}

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event of that name (already received, or arriving within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event in {timeout:g} s")
            try:
                message = self._read(remaining)
            except TimeoutError:
                continue
            if message["type"] == "event":
                self.events.append(message)

    # ---- what a person does ------------------------------------------------------------------------------------

    def attach(self, breakpoints: dict[str, list[int]]) -> None:
        """Attach to a `debugpy --listen` process as VS Code's attach configuration does, with breakpoints set."""
        self.request("initialize", {"clientID": "metalmart-tests", "adapterID": "debugpy", "pathFormat": "path",
                                    "linesStartAt1": True, "columnsStartAt1": True})
        attach = self.request("attach", {"justMyCode": True}, wait=False)
        self.event("initialized", 30)
        for path, lines in breakpoints.items():
            body = self.response(self.request("setBreakpoints", {
                "source": {"path": path}, "breakpoints": [{"line": n} for n in lines]}, wait=False))
            if not all(b.get("verified", True) for b in body.get("breakpoints", [])):
                raise DapError(f"breakpoints not verified: {body}")
        self.request("configurationDone")
        self.response(attach)

    def stopped(self, timeout: float) -> int:
        """Wait for the process to stop at a breakpoint; returns the stopped thread's id."""
        event = self.event("stopped", timeout)
        return int(event["body"]["threadId"])

    def evaluate(self, thread: int, expression: str) -> str:
        frames = self.response(self.request("stackTrace", {"threadId": thread, "levels": 1}, wait=False))
        frame = frames["stackFrames"][0]["id"]
        body = self.response(self.request("evaluate", {"expression": expression, "frameId": frame,
                                                       "context": "watch"}, wait=False))
        return str(body["result"])

    def resume(self, thread: int) -> None:
        self.request("continue", {"threadId": thread})
