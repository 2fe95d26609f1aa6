"""The dashboard's HTTP server: its page, two JSON routes and one Server-Sent Events stream.

Routes (GET/HEAD only; everything else is 404 or 405):

- `/` — the page; `/static/<name>` — its own files, looked up by exact name in a
  table built at start (no file-system path is ever derived from a URL);
- `/api/state` — images rows, versions, counters (JSON);
- `/api/density?order=N&axis=ingest|obs&since=T` — source counts per HEALPix cell;
- `/api/cone?ra=&dec=&radius=` and `/api/lightcurve?ra=&dec=&radius=` — the sources
  where the user clicked, and a source's light curve (`sexstream.dashboard.lookup`);
- `/events` — the push stream: one event per Delta commit;
- `/metrics`, `/healthz`, `/readyz` — the operational routes (`sexstream.endpoints`): the
  daemon's own when it serves the dashboard, else the sink's metrics and the feed's
  readiness (ready once the tables are loaded).

Binds 127.0.0.1 by default; on a loopback address, requests naming another host are
refused (DNS-rebinding guard).
"""
from __future__ import annotations

import logging
import math
import queue
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from sexstream.dashboard.feed import SkyFeed
from sexstream.dashboard.lookup import SkyLookup
from sexstream.endpoints import ROUTES, Endpoints

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE_S = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The only kinds of file the page is made of (anything else in static/ is not served).
MIME_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
              ".woff2": "font/woff2"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def static_files(folder: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """The page's files by URL name ('index.html', 'app.js', ...): (content, MIME type)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in MIME_TYPES:
            files[path.name] = (path.read_bytes(), MIME_TYPES[path.suffix])
    return files


class _Handler(BaseHTTPRequestHandler):
    """One request; the server object carries the feed, the static files and the host guard."""

    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("dashboard %s - %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain; charset=utf-8",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def _route(self, head: bool) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            self._send(HTTPStatus.FORBIDDEN, b"unknown host\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        route, query = url.path, parse_qs(url.query)
        feed = self.server.feed
        if route == "/events" and not head:
            self._events()
        elif route in ROUTES:
            self._send(*self.server.endpoints.respond(route), head=head)
        elif route in ("/", "/index.html"):
            self._static("index.html", head)
        elif route.startswith("/static/") and route[len("/static/"):] in self.server.files:
            self._static(route[len("/static/"):], head)
        elif route == "/api/state":
            self._send(HTTPStatus.OK, feed.state().encode(), "application/json", head=head)
        elif route == "/api/density":
            try:
                order = int(query.get("order", ["6"])[0])
                axis = query.get("axis", ["ingest"])[0]
                since = float(query["since"][0]) if "since" in query else None
                if axis not in ("ingest", "obs") or (since is not None and not math.isfinite(since)):
                    raise ValueError(axis)
            except ValueError:
                self._send(HTTPStatus.BAD_REQUEST, b"bad density query\n", "text/plain; charset=utf-8")
                return
            body = feed.density(order, axis, since).encode()
            self._send(HTTPStatus.OK, body, "application/json", head=head)
        elif route in ("/api/cone", "/api/lightcurve"):
            status, body = self.server.lookup.answer(route, query)
            self._send(status, body, "application/json", head=head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head=head)

    def _static(self, name: str, head: bool) -> None:
        body, mime = self.server.files[name]
        self._send(HTTPStatus.OK, body, mime, head=head)

    def _send(self, status: HTTPStatus, body: bytes, mime: str, *, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _events(self) -> None:
        """The SSE stream: `data: <json>` per commit, a comment every KEEPALIVE_S seconds."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        feed = self.server.feed
        q = feed.subscribe()
        self.server.streams.add(q)
        try:
            self.wfile.write(b"retry: 1000\ndata: {\"type\":\"hello\"}\n\n")
            self.wfile.flush()
            while not self.server.closing.is_set():
                try:
                    text = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    if text is None:
                        break
                    self.wfile.write(b"data: " + text.encode() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            feed.unsubscribe(q)
            self.server.streams.discard(q)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], feed: SkyFeed, endpoints: Endpoints) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.feed = feed
        self.lookup = SkyLookup(feed.sink)
        self.endpoints = endpoints
        self.files = static_files()
        self.closing = threading.Event()
        self.streams: set[queue.Queue] = set()
        self.loopback = address[0] in _LOOPBACK or address[0].startswith("127.")

    def host_allowed(self, host_header: str) -> bool:
        """On a loopback bind, only Host headers naming a loopback name are served."""
        if not self.loopback:
            return True
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return host in _LOOPBACK or host.startswith("127.")


class Dashboard:
    """The live sky-coverage dashboard of a sink, served from a background thread.

    >>> board = Dashboard("var/sink", port=0).start()   # port 0: any free port
    >>> board.url
    'http://127.0.0.1:40123/'
    >>> board.stop()
    """

    def __init__(self, sink: str | Path, host: str = "127.0.0.1", port: int = 8765, *,
                 endpoints: Endpoints | None = None) -> None:
        self.sink = Path(sink)
        self.feed = SkyFeed(self.sink)
        self.endpoints = endpoints or self._own_endpoints()
        self._server = _Server((host, port), self.feed, self.endpoints)
        self._thread: threading.Thread | None = None

    def _own_endpoints(self) -> Endpoints:
        """The routes of a dashboard that runs alone: the sink's metrics; ready once loaded."""
        from sexstream.metrics import sink_registry
        from sexstream.sinkfiles import SinkFiles

        def readiness() -> dict:
            loading = self.feed.loading
            return {"ready": not loading, "state": "loading" if loading else "serving",
                    "reasons": ["loading the tables"] if loading else []}

        return Endpoints(sink_registry(SinkFiles(self.sink)), readiness)

    @property
    def url(self) -> str:
        """The page's URL (with the port actually bound)."""
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def start(self) -> "Dashboard":
        """Start following the tables and serving; returns at once (self, for chaining)."""
        self.feed.start()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="sexstream-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the event streams, stop serving and release the port."""
        self._server.closing.set()
        for q in list(self._server.streams):
            q.put(None)
        self.feed.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Dashboard":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(sink: str, host: str = "127.0.0.1", port: int = 8765, *,
          ready: Callable[[str], None] | threading.Event | None = None) -> None:
    """Serve the dashboard of `sink` until interrupted (Ctrl-C).

    `ready` is called with the page's URL once the port is bound (or set, if it is a
    threading.Event).
    """
    board = Dashboard(sink, host, port).start()
    try:
        if isinstance(ready, threading.Event):
            ready.set()
        elif ready is not None:
            ready(board.url)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
