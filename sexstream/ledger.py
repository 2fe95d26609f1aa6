"""What the sink already holds: (path, content hash) of images with a final verdict
("ok" or "failed", not "incomplete") under one config.

The streaming checkpoint is what normally keeps an image from being processed twice;
the ledger is the second guard, read from the images table itself: a replay of the
same folders, or a daemon started on a new checkpoint over an existing sink, skips
images whose very bytes were already measured with the same effective config.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Verdicts that end an image's processing for a given content and config; an
#: "incomplete" image is measured again once its file changes.
FINAL = ("ok", "failed")


class Ledger:
    """In-memory index path -> content hashes, for one config hash."""

    def __init__(self, config_hash: str):
        self.config_hash = config_hash
        self._known: dict[str, set[str]] = defaultdict(set)

    @classmethod
    def load(cls, images_dir: str, config_hash: str) -> "Ledger":
        """Read the images table (through the Delta log) once; empty if it does not exist."""
        from sexstream.tables import open_table, read_table

        ledger = cls(config_hash)
        if open_table(images_dir) is not None:
            ledger._add(read_table(images_dir, columns=["path", "content_hash", "config_hash", "status"]))
        return ledger

    def _add(self, table) -> None:
        final = pc.is_in(table["status"], value_set=pa.array(FINAL))
        mask = pc.and_(final, pc.equal(table["config_hash"], self.config_hash))
        kept = table.filter(mask)
        for path, h in zip(kept["path"].to_pylist(), kept["content_hash"].to_pylist()):
            if h:
                self._known[path].add(h)

    def add_parts(self, parts, table_dir: str) -> None:
        """Learn the images rows of freshly committed part files."""
        for part in parts:
            t = pq.read_table(Path(table_dir) / part.path,
                              columns=["path", "content_hash", "config_hash", "status"])
            self._add(t)

    def known_for(self, paths: list[str]) -> dict[str, frozenset[str]]:
        """The known content hashes of each of `paths` that has any."""
        return {p: frozenset(self._known[p]) for p in paths if p in self._known}

    def __len__(self) -> int:
        return sum(len(v) for v in self._known.values())
