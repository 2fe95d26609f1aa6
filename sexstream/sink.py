"""The sink folder: its two Delta tables and what they already hold.

`Sink` is the one object that knows the sink's layout and state:

- the tables `<sink>/sources` and `<sink>/images` (`path`, `table`, `holds`,
  `schema_bytes`, `commit` -- one idempotent commit per table and batch);
- the images already measured, for one config (`ledger`): the same bytes get the same
  verdict, so a path whose bytes the sink holds is skipped unless forced;
- the newest verdict of every path, for any config (`verdicts`): what the arrival gate,
  the start-up reconciliation and `retry-failed` ask;
- the bookkeeping folders beside the tables (`_inflight`, `_checkpoints`).
"""
from __future__ import annotations

import os
from pathlib import Path

from deltalake import DeltaTable

from sexstream import transaction
from sexstream.ledger import Ledger
from sexstream.parts import PartFile
from sexstream.schema import IMAGES, SOURCES, TABLES
from sexstream.tables import open_table, table_path
from sexstream.verdicts import Verdicts


class Sink:
    """The sink folder `root` (created on the first commit)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(os.fspath(root))
        self._verdicts: Verdicts | None = None

    def __repr__(self) -> str:
        return f"Sink({self.root!r})"

    def path(self, name: str) -> str:
        """The folder of table `name` (SOURCES or IMAGES)."""
        if name not in TABLES:
            raise ValueError(f"no table {name!r} in a sink (tables: {', '.join(TABLES)})")
        return table_path(self.root, name)

    @property
    def sources(self) -> str:
        return self.path(SOURCES)

    @property
    def images(self) -> str:
        return self.path(IMAGES)

    def folder(self, name: str) -> Path:
        """A bookkeeping folder beside the tables, e.g. "_checkpoints" (not created)."""
        return Path(self.root) / name

    def table(self, name: str) -> DeltaTable | None:
        """Table `name` at its latest version; None before its first commit."""
        return open_table(self.path(name))

    def holds(self, name: str, app_id: str, batch_id: int) -> bool:
        """True when table `name` already holds batch `batch_id` of `app_id` (or a later
        one): a batch Spark replays after a crash."""
        done = transaction.committed_version(self.path(name), app_id)
        return done is not None and done >= batch_id

    def schema_bytes(self, name: str) -> bytes | None:
        """Table `name`'s Arrow schema, IPC-serialized for the tasks (None: no table yet)."""
        schema = transaction.current_schema(self.path(name))
        return None if schema is None else schema.serialize().to_pybytes()

    def commit(self, name: str, parts: list[PartFile], *, app_id: str, batch_id: int) -> int | None:
        """Commit `parts` to table `name` in one commit carrying (app_id, batch_id): the
        new version, or None when the table already holds the batch (see
        `sexstream.transaction.commit`)."""
        return transaction.commit(self.path(name), parts, app_id=app_id, batch_id=batch_id)

    def ledger(self, config_hash: str) -> Ledger:
        """What the images table holds for `config_hash`, and the images whose sources
        were committed without their images row (`Ledger.learn_sourced`)."""
        ledger = Ledger.load(self.images, config_hash)
        ledger.learn_sourced(self.sources, self.images)
        return ledger

    def verdicts(self) -> Verdicts:
        """The newest verdict of every path, refreshed from the images table's log."""
        if self._verdicts is None:
            self._verdicts = Verdicts(self.images)
        return self._verdicts.refresh()
