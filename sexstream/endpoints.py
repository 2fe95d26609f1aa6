"""The operational HTTP routes of a process -- `/metrics`, `/healthz`, `/readyz` -- and the
small server that serves them alone (`sexstream run --metrics-port N`).

- `/metrics`: the Prometheus text exposition of a registry (`sexstream.metrics`);
- `/healthz`: 200 while the process is alive and its monitor keeps sampling, else 503;
- `/readyz`: 200 when ready, 503 when not; the JSON body says why (`reasons`).

The dashboard's server (`sexstream.dashboard.server`) serves the same routes through
`Endpoints.respond`. Both bind 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("sexstream")

JSON = "application/json"
ROUTES = ("/metrics", "/healthz", "/readyz")


def _always_alive() -> dict:
    return {"alive": True}


class Endpoints:
    """The three routes over `registry`, `readiness()` (a dict with "ready" and
    "reasons", as `sexstream.health.readiness` gives) and `alive()` (a dict with "alive")."""

    def __init__(self, registry: CollectorRegistry, readiness: Callable[[], dict],
                 alive: Callable[[], dict] = _always_alive):
        self.registry = registry
        self.readiness = readiness
        self.alive = alive
        self.started = time.time()

    def respond(self, route: str) -> tuple[int, bytes, str] | None:
        """(HTTP status, body, content type) for `route`, None if it is not one of ours."""
        if route == "/metrics":
            return HTTPStatus.OK, generate_latest(self.registry), CONTENT_TYPE_LATEST
        if route == "/healthz":
            body = {**self.alive(), "pid": os.getpid(), "uptime_s": round(time.time() - self.started, 3)}
            return (HTTPStatus.OK if body["alive"] else HTTPStatus.SERVICE_UNAVAILABLE), _json(body), JSON
        if route == "/readyz":
            body = self.readiness()
            return (HTTPStatus.OK if body["ready"] else HTTPStatus.SERVICE_UNAVAILABLE), _json(body), JSON
        return None


def _json(body: dict) -> bytes:
    return (json.dumps(body, default=str) + "\n").encode()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("endpoints %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, head: bool) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/":
            answer = (HTTPStatus.OK, ("\n".join(ROUTES) + "\n").encode(), "text/plain; charset=utf-8")
        else:
            answer = self.server.endpoints.respond(route) or (HTTPStatus.NOT_FOUND, b"not found\n",
                                                              "text/plain; charset=utf-8")
        status, body, mime = answer
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.endpoints = endpoints


class EndpointServer:
    """`endpoints` served on `host`:`port` from a background thread (port 0: any free one)."""

    def __init__(self, endpoints: Endpoints, host: str = "127.0.0.1", port: int = 0):
        self._server = _Server((host, port), endpoints)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> "EndpointServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="sexstream-endpoints",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
