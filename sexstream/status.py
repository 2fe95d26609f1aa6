"""`sexstream status`: what the sink holds, read through the Delta logs (no Spark), and
whether the daemon of the checkpoint is ready (the same rule and reasons as its
`/readyz`, read from `<checkpoint>/health.json`: `sexstream.health`)."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import pyarrow.compute as pc

from sexstream.schema import IMAGES, SOURCES
from sexstream.tables import latest_images, open_table, table_path


def _rows_from_stats(dt) -> int:
    """Row count from the add actions' statistics: no data file is opened."""
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def report(sink: str, recent: int = 10) -> dict:
    """A plain dict: counts by status (latest verdict per path), sources, batches, last
    commit, and the `recent` newest failures with their reasons."""
    out: dict = {"sink": str(sink), "images": {}, "sources": 0, "last_batch": None,
                 "last_commit": None, "versions": {}, "recent_failures": []}
    src = open_table(table_path(sink, SOURCES))
    if src is not None:
        out["sources"] = _rows_from_stats(src)
        out["versions"]["sources"] = src.version()
    img = open_table(table_path(sink, IMAGES))
    if img is None:
        return out
    out["versions"]["images"] = img.version()
    history = img.history(1)
    if history:
        ts = history[0].get("timestamp")
        out["last_commit"] = datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat() if ts else None
    latest = latest_images(sink, ["path", "status", "reason", "batch_id", "ingest_time"])
    if latest.num_rows == 0:
        return out
    out["images"] = {c["values"]: int(c["counts"]) for c in latest.column("status").value_counts().to_pylist()}
    out["images"]["total"] = latest.num_rows
    newest = latest.sort_by([("ingest_time", "descending"), ("batch_id", "descending")])
    out["last_batch"] = newest.column("batch_id")[0].as_py()
    bad = newest.filter(pc.not_equal(newest["status"], "ok")).slice(0, recent).to_pandas()
    out["recent_failures"] = [
        {"path": r.path, "status": r.status, "reason": r.reason, "batch_id": int(r.batch_id)}
        for r in bad.itertuples()]
    return out


def render(r: dict) -> str:
    """The report as lines for a terminal."""
    imgs = r["images"]
    daemon = r.get("daemon")
    lines = [f"daemon       {'ready' if daemon['ready'] else 'not ready: ' + '; '.join(daemon['reasons'])}"
             ] if daemon else []
    lines += [f"sink         {r['sink']}",
             f"images       {imgs.get('total', 0)} ({imgs.get('ok', 0)} ok, {imgs.get('failed', 0)} failed, "
             f"{imgs.get('incomplete', 0)} incomplete)",
             f"sources      {r['sources']}",
             f"last batch   {r['last_batch'] if r['last_batch'] is not None else '-'}",
             f"last commit  {r['last_commit'] or '-'}"]
    if r["recent_failures"]:
        lines.append("recent failures:")
        lines += [f"  [{f['status']}] {f['path']}: {f['reason']}" for f in r["recent_failures"]]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from sexstream.flags import settings_from_args

    from sexstream.health import daemon_readiness

    settings = settings_from_args(args, sink=args.sink, checkpoint=args.checkpoint)
    r = report(settings.sink, recent=args.recent)
    r["daemon"] = daemon_readiness(settings.checkpoint)  # what its /readyz says, from <checkpoint>/health.json
    print(json.dumps(r, indent=1, default=str) if args.json else render(r))
    return 0


def register(sub) -> None:
    p = sub.add_parser("status", help="what the sink holds: images ok/failed, sources, last batch; "
                       "whether the daemon is ready")
    p.add_argument("--sink")
    p.add_argument("--checkpoint", help="the daemon's checkpoint folder, whose health.json says whether it is "
                   "ready (default: the settings' paths.checkpoint)")
    p.add_argument("--settings", metavar="TOML")
    p.add_argument("--json", action="store_true")
    p.add_argument("--recent", type=int, default=10, help="recent failures to list")
    p.set_defaults(func=cmd_status)
