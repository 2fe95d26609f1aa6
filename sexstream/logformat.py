"""The daemon's two log formats: lines for people (the default, on stderr) and JSON lines
for log shippers (`--log-format json`, on stdout).

In JSON every record is one object on one line:

    {"time": "2026-12-03T22:49:18.693Z", "level": "INFO", "logger": "sexstream",
     "event": "batch", "message": "batch 0: 2 files, ...", "batch_id": 0, "files": 2, ...}

`event` says what it is: "batch" (the batch's stats, `sexstream.engine.BatchStats`,
failures included), "failure" (one failed or incomplete image: batch_id, path, status,
reason, reason_class), "start", "stopping", "stop" (exit_code), or "log" for any other
record. A record gets its event and fields from `extra={"event": ..., "data": ...}`,
`data` being a dict or an object with `to_dict()`; an exception adds "exception" (the
traceback as one string). The driver JVM's log4j speaks JSON on stdout too
(conf/log4j2-json.properties: event "spark"), so stdout is JSON only; stderr keeps what
is not a log record (the JVM launcher's own warnings, a crash's traceback).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from sexstream.reasons import reason_class

FORMATS = ("text", "json")
#: The human format's layout (the daemon's log lines before this module existed).
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(message)s"
TEXT_DATEFMT = "%Y-%m-%dT%H:%M:%S"
_RESERVED = ("time", "level", "logger", "event", "message")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"),
               "level": record.levelname, "logger": record.name,
               "event": getattr(record, "event", "log"), "message": record.getMessage()}
        data = getattr(record, "data", None)
        if hasattr(data, "to_dict"):
            data = data.to_dict()
        if isinstance(data, dict):
            out.update({k: v for k, v in data.items() if k not in _RESERVED})
            if out["event"] == "failure" and "reason" in data:
                out["reason_class"] = reason_class(data["reason"])
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(verbose: bool = False, log_format: str = "text") -> None:
    """Set the root logger up for a command: INFO (DEBUG with `verbose`) in `log_format`
    ("text" on stderr, "json" on stdout); py4j only from WARNING."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(FORMATS)}")
    if log_format == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, TEXT_DATEFMT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("py4j").setLevel(logging.WARNING)
