"""What the sink already holds: (path, content hash) of images with a verdict ("ok",
"failed" or "incomplete") under one config: the same bytes get the same verdict, so
any of them ends the processing of those bytes (an explicit retry forces it).

The streaming checkpoint is what normally keeps an image from being processed twice;
the ledger is the second guard, read from the images table itself: a replay of the
same folders, or a daemon started on a new checkpoint over an existing sink, skips
images whose very bytes were already measured with the same effective config.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sexstream.tables import open_table, read_table
from sexstream.verdicts import mtime_us

#: Verdicts that end an image's processing for a given content and config; an
#: "incomplete" image is measured again once its file changes (new bytes, new hash),
#: never again for the same bytes (a stalled download requeued would repeat its row).
FINAL = ("ok", "failed", "incomplete")


#: Columns of the images table the ledger reads.
COLUMNS = ["path", "content_hash", "config_hash", "status", "size", "mtime"]


def stat_key(path: str) -> str:
    """The identity of a file whose bytes could not be read (unreadable, vanished, a
    broken symlink): its size and mtime, or "stat:-" when it cannot even be stat'ed.
    A verdict recorded without a content hash is keyed by it instead."""
    try:
        st = os.stat(path)
    except OSError:
        return "stat:-"
    return f"stat:{st.st_size}:{mtime_us(st.st_mtime)}"


class Ledger:
    """In-memory index path -> content hashes, for one config hash."""

    def __init__(self, config_hash: str):
        self.config_hash = config_hash
        self._known: dict[str, set[str]] = defaultdict(set)
        self._sourced: frozenset[str] = frozenset()

    @classmethod
    def load(cls, images_dir: str, config_hash: str) -> "Ledger":
        """Read the images table (through the Delta log) once; empty if it does not exist."""
        ledger = cls(config_hash)
        if open_table(images_dir) is not None:
            ledger._add(read_table(images_dir, columns=COLUMNS))
        return ledger

    def _add(self, table) -> None:
        final = pc.is_in(table["status"], value_set=pa.array(FINAL))
        mask = pc.and_(final, pc.equal(table["config_hash"], self.config_hash))
        kept = table.filter(mask)
        sizes = kept["size"].to_pylist()
        mtimes = kept["mtime"].cast(pa.int64()).to_pylist()
        for i, (path, h) in enumerate(zip(kept["path"].to_pylist(), kept["content_hash"].to_pylist())):
            if h:
                self._known[path].add(h)
            else:  # bytes never read: remember the file by its stat
                self._known[path].add("stat:-" if sizes[i] is None else f"stat:{sizes[i]}:{mtimes[i]}")

    def add_parts(self, parts, table_dir: str) -> None:
        """Learn the images rows of freshly committed part files."""
        for part in parts:
            t = pq.read_table(Path(table_dir) / part.path, columns=COLUMNS)
            self._add(t)

    def learn_sourced(self, sources_dir: str, images_dir: str) -> int:
        """Learn the images whose sources rows are committed but whose images row is not.

        A driver that dies between a batch's sources commit and its images commit
        leaves exactly that; the query's own replay then commits the images rows alone,
        but a query on a NEW checkpoint (the old one deleted or lost; or a replay) would
        measure those images again and commit their sources a second time -- and stays
        able to until they have their images row, across its own restarts. Their
        image_ids (`sourced`) let its tasks write the images row only. Reads the
        image_id column of both tables (files of other configs are pruned by their
        statistics): call it whenever a query starts. Returns how many were found.
        """
        if open_table(sources_dir) is None:
            return 0
        mine = [("config_hash", "=", self.config_hash)]
        ids = set(pc.unique(read_table(sources_dir, ["image_id"], mine)["image_id"]).to_pylist())
        if ids and open_table(images_dir) is not None:
            ids -= set(pc.unique(read_table(images_dir, ["image_id"], mine)["image_id"]).to_pylist())
        self._sourced = frozenset(i for i in ids if i)
        return len(self._sourced)

    @property
    def sourced(self) -> frozenset[str]:
        """image_ids whose sources rows are committed without an images row (see
        `learn_sourced`): measure them for their verdict, never commit their sources."""
        return self._sourced

    def known_for(self, paths: list[str]) -> dict[str, frozenset[str]]:
        """The known content hashes (and `stat_key`s) of each of `paths` that has any."""
        return {p: frozenset(self._known[p]) for p in paths if p in self._known}
