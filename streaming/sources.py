"""The query's stream source, and a micro-batch's rows as the engine's items.

The source is the arrivals journal of the checkpoint (`sexstream.journal`, read through
`streaming.arrivals_source`): the arrival gate, the start-up reconciliation, replay and
`retry-failed` append to it; Spark's offsets are its sequence numbers. Nothing lists the
raw tree per trigger.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sexstream.engine import Item
from sexstream.journal import journal_folder
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


def items_of(df) -> list[Item]:
    """The micro-batch's rows as items, one per path (a path journaled twice in a batch is
    measured once; `force` if any of its entries says so, `stalled` only if all do)."""
    items: dict[str, Item] = {}
    for r in df.select("path", "length", "modificationTime", "force", "stalled").collect():
        path, force, stalled = r["path"], bool(r["force"]), bool(r["stalled"])
        old = items.get(path)
        if old is None:
            items[path] = Item(path, r["length"], r["modificationTime"], force, stalled)
        else:
            items[path] = Item(path, r["length"], r["modificationTime"], force or old.force,
                               stalled and old.stalled)
    return list(items.values())
