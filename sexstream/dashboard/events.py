"""A client of the dashboard's push stream (Server-Sent Events at `/events`), for scripts,
benchmarks and tests: a thread parses each `data:` payload into a queue."""
from __future__ import annotations

import http.client
import json
import queue
import threading
import time


class EventStream:
    """Subscribe to `<url>/events`; `.events` holds (arrival time, event dict) pairs."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        host, port = url.split("//")[1].rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.conn.request("GET", "/events")
        self.response = self.conn.getresponse()
        self.events: queue.Queue = queue.Queue()
        self.skipped: list[tuple[float, dict]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.startswith(b"data: "):
                    self.events.put((time.time(), json.loads(line[6:])))
        except (OSError, ValueError):
            pass

    def next(self, kind: str, timeout: float = 10.0) -> tuple[float, dict]:
        """The next event of type `kind` (others are kept for later calls); raises
        queue.Empty after `timeout` seconds."""
        for item in self.skipped:
            if item[1].get("type") == kind:
                self.skipped.remove(item)
                return item
        deadline = time.time() + timeout
        while True:
            received, event = self.events.get(timeout=max(0.01, deadline - time.time()))
            if event.get("type") == kind:
                return received, event
            self.skipped.append((received, event))

    def close(self) -> None:
        self.conn.close()
