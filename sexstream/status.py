"""`sexstream status`: what the sink holds, read through the Delta logs (no Spark)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow.compute as pc

from sexstream.tables import open_table, read_table


def _table(path: Path):
    return open_table(str(path))


def _rows_from_stats(dt) -> int:
    """Row count from the add actions' statistics: no data file is opened."""
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def report(sink: str, recent: int = 10) -> dict:
    """A plain dict: counts by status (latest verdict per path), sources, batches, last
    commit, and the `recent` newest failures with their reasons."""
    sink_path = Path(sink)
    out: dict = {"sink": str(sink_path), "images": {}, "sources": 0, "last_batch": None,
                 "last_commit": None, "versions": {}, "recent_failures": []}
    src = _table(sink_path / "sources")
    if src is not None:
        out["sources"] = _rows_from_stats(src)
        out["versions"]["sources"] = src.version()
    img = _table(sink_path / "images")
    if img is None:
        return out
    out["versions"]["images"] = img.version()
    history = img.history(1)
    if history:
        ts = history[0].get("timestamp")
        out["last_commit"] = datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat() if ts else None
    t = read_table(str(sink_path / "images"),
                   columns=["path", "status", "reason", "batch_id", "ingest_time", "n_sources"])
    if t.num_rows == 0:
        return out
    df = t.to_pandas().sort_values(["batch_id", "ingest_time"])
    latest = df.drop_duplicates("path", keep="last")
    out["images"] = {k: int(v) for k, v in latest["status"].value_counts().items()}
    out["images"]["total"] = int(len(latest))
    out["last_batch"] = int(df["batch_id"].max())
    bad = latest[latest["status"] != "ok"].tail(recent)
    out["recent_failures"] = [
        {"path": r.path, "status": r.status, "reason": r.reason, "batch_id": int(r.batch_id)}
        for r in bad.itertuples()]
    return out


def render(r: dict) -> str:
    """The report as lines for a terminal."""
    imgs = r["images"]
    lines = [f"sink         {r['sink']}",
             f"images       {imgs.get('total', 0)} ({imgs.get('ok', 0)} ok, {imgs.get('failed', 0)} failed, "
             f"{imgs.get('incomplete', 0)} incomplete)",
             f"sources      {r['sources']}",
             f"last batch   {r['last_batch'] if r['last_batch'] is not None else '-'}",
             f"last commit  {r['last_commit'] or '-'}"]
    if r["recent_failures"]:
        lines.append("recent failures:")
        lines += [f"  [{f['status']}] {f['path']}: {f['reason']}" for f in r["recent_failures"]]
    return "\n".join(lines)
