"""The query's stream source, and a micro-batch's rows as the engine's items.

The source is the arrivals journal of the checkpoint (`sexstream.journal`, read through
`streaming.arrivals_source`): the arrival gate, the start-up reconciliation, replay and
`retry-failed` append to it; Spark's offsets are its sequence numbers. Nothing lists the
raw tree per trigger.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from sexstream.engine import Item
from sexstream.journal import Entry, Journal, journal_folder
from streaming.arrivals_source import arrivals_stream

log = logging.getLogger("sexstream")


def raw_stream(spark, checkpoint: str, *, max_files: int):
    """The streaming DataFrame of the journal of `checkpoint`, at most `max_files` per batch."""
    folder = journal_folder(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    return arrivals_stream(spark, str(folder), max_files=max_files)


def retire_old_checkpoint(checkpoint: str) -> str | None:
    """Move aside a checkpoint of the listing-based query (Spark's file source, before the
    arrivals journal), which Spark cannot resume with the journal source; returns where
    it went, or None. Nothing is lost: the start-up reconciliation journals every file
    the sink has no verdict on, and the verdicts skip what was measured."""
    offsets = Path(checkpoint) / "offsets"
    logs = [p for p in offsets.iterdir() if p.name.isdigit()] if offsets.is_dir() else []
    if not logs:
        return None
    text = max(logs, key=lambda p: int(p.name)).read_text()
    if '"seq"' in text:
        return None
    aside = f"{checkpoint.rstrip('/')}.listing-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.move(checkpoint, aside)
    log.warning("checkpoint %s was made by the listing-based query: moved to %s, starting a new one",
                checkpoint, aside)
    return aside


def _merge(items: dict[str, Item], item: Item) -> None:
    old = items.get(item.path)
    items[item.path] = item if old is None else Item(item.path, item.length, item.mtime, item.force or old.force,
                                                     item.stalled and old.stalled)


def items_of(df) -> list[Item]:
    """The micro-batch's rows as items, one per path (a path journaled twice in a batch is
    measured once; `force` if any of its entries says so, `stalled` only if all do)."""
    items: dict[str, Item] = {}
    for r in df.select("path", "length", "modificationTime", "force", "stalled").collect():
        _merge(items, Item(r["path"], r["length"], r["modificationTime"], bool(r["force"]), bool(r["stalled"])))
    return list(items.values())


def _end_seq(checkpoint: str, batch_id: int) -> int | None:
    """The journal sequence number batch `batch_id` ends at, from Spark's offset log
    (`offsets/<batch>`: "v1", the batch metadata, then the source's offset as JSON)."""
    try:
        lines = (Path(checkpoint) / "offsets" / str(batch_id)).read_text().splitlines()
        return int(json.loads(lines[2])["seq"])
    except (OSError, IndexError, ValueError, KeyError, TypeError):
        return None


def batch_items(checkpoint: str, batch_id: int) -> list[Item] | None:
    """The entries of batch `batch_id` read straight from the journal, between the end of
    the previous batch and its own end (Spark's offset log names both), as items -- the
    same rows the batch's DataFrame holds, without a Spark job to collect them. None when
    the offset log does not tell (the caller then collects the DataFrame)."""
    end = _end_seq(checkpoint, batch_id)
    if end is None:
        return None
    journal = Journal(journal_folder(checkpoint))
    if batch_id == 0:
        segments = journal.segments()
        start = max(0, segments[0][0] - 1) if segments else 0
    else:
        start = _end_seq(checkpoint, batch_id - 1)
        if start is None:
            return None
    items: dict[str, Item] = {}
    for e in journal.read(start, end):
        _merge(items, _item(e))
    return list(items.values())


def _item(e: Entry) -> Item:
    mtime = None if e.mtime is None else datetime.fromtimestamp(e.mtime, timezone.utc)
    return Item(e.path, e.size, mtime, e.force, e.stalled)
