"""The sink folder: its two Delta tables and what they already hold.

`Sink` is the one object that knows the sink's layout and state:

- the tables `<sink>/sources` and `<sink>/images` (`path`, `table`, `holds`,
  `schema_bytes`, `commit` -- one idempotent commit per table and batch);
- what they hold, per (path, config): the verdict index (`index`, `verdicts`), kept in
  step with the images table's log (`sync`) -- lookups, never a read of the table;
- the images commits in flight (`_pending/`): a batch's images rows are written to an
  intent file before its sources are committed, and the intent removed once its images
  are; a driver that died between the two commits leaves the intent, and `recover`
  (at start, and before a vacuum) commits those rows with the batch's own app
  transaction, so the same sources are never committed twice, even on a new checkpoint;
- the bookkeeping folders beside the tables (`_index`, `_inflight`, `_pending`,
  `_checkpoints`).
"""
from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from sexstream import parts as parts_mod
from sexstream import transaction
from sexstream.index import Index, Verdict
from sexstream.parts import PartFile
from sexstream.schema import IMAGES, SOURCES, TABLES
from sexstream.tables import KeptTable, table_path
from sexstream.transaction import Replace

log = logging.getLogger("sexstream")

PENDING = "_pending"


class Sink:
    """The sink folder `root` (created on the first commit)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(os.fspath(root))
        self.index = Index(self.root)
        self._tables: dict[str, KeptTable] = {}  # open handles, brought up to date on use

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
        """Table `name` at its latest version; None before its first commit. The handle
        is kept and followed (`tables.KeptTable`: the log's new entries only) rather than
        opened again, which reads the whole log state."""
        kept = self._tables.get(name)
        if kept is None:
            kept = self._tables[name] = KeptTable(self.path(name))
        return kept.latest()

    def holds(self, name: str, app_id: str, batch_id: int) -> bool:
        """True when table `name` already holds batch `batch_id` of `app_id` (or a later
        one): a batch Spark replays after a crash."""
        table = self.table(name)
        done = None if table is None else table.transaction_version(app_id)
        return done is not None and done >= batch_id

    def schema_bytes(self, name: str) -> bytes | None:
        """Table `name`'s Arrow schema, IPC-serialized for the tasks (None: no table yet);
        as of the last `table`, `holds` or `commit`."""
        kept = self._tables.get(name)
        table = kept.table if kept is not None and kept.table is not None else self.table(name)
        if table is None:
            return None
        return pa.schema(table.schema().to_arrow()).serialize().to_pybytes()

    def commit(self, name: str, parts: list[PartFile], *, app_id: str, batch_id: int,
               replace: Replace | None = None) -> int | None:
        """Commit `parts` to table `name` in one commit carrying (app_id, batch_id),
        superseding the rows `replace` names: the new version, or None when the table
        already holds the batch (see `sexstream.transaction.commit`)."""
        return transaction.commit(self.path(name), parts, app_id=app_id, batch_id=batch_id, replace=replace,
                                  table=self.table(name))

    # -- what it holds

    def sync(self) -> int:
        """Bring the verdict index up to the images table's latest commit."""
        return self.index.sync(self.images)

    def verdicts(self, paths, config_hash: str) -> dict[str, Verdict]:
        """The newest verdict of each of `paths` under `config_hash` (synced first)."""
        self.sync()
        return self.index.lookup(paths, config_hash)

    # -- images commits in flight

    def _intent(self, app_id: str, batch_id: int) -> Path:
        return self.folder(PENDING) / f"{app_id}-{batch_id:08d}.json"

    def pending(self, app_id: str, batch_id: int, rows: pa.Table, replace: Replace | None) -> Path:
        """Record the images rows batch `batch_id` of `app_id` will commit (superseding
        `replace`) once its sources are committed."""
        intent = self._intent(app_id, batch_id)
        intent.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rows.schema) as writer:
            writer.write_table(rows)
        body = {"app_id": app_id, "batch_id": batch_id,
                "rows": base64.b64encode(sink.getvalue().to_pybytes()).decode(),
                "replace": None if replace is None else
                {"paths": sorted(replace.paths), "config_hash": replace.config_hash, "mode": replace.mode}}
        tmp = intent.with_name(f".{intent.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, intent)
        return intent

    def done(self, app_id: str, batch_id: int) -> None:
        """The images of batch `batch_id` of `app_id` are committed: forget the intent."""
        self._intent(app_id, batch_id).unlink(missing_ok=True)

    def recover(self) -> int:
        """Commit the images rows that drivers which died between a batch's two commits
        left pending (idempotent: a batch the images table holds is skipped); returns how
        many batches were recovered."""
        folder = self.folder(PENDING)
        recovered = 0
        for intent in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                body = json.loads(intent.read_text())
                rows = pa.ipc.open_stream(base64.b64decode(body["rows"])).read_all()
            except (OSError, ValueError, pa.ArrowInvalid):
                continue  # being written by a live driver, or cut: the next start sees it
            app_id, batch_id = body["app_id"], int(body["batch_id"])
            r = body.get("replace")
            replace = None if r is None else Replace(frozenset(r["paths"]), r["config_hash"], r["mode"])
            part = parts_mod.write_part(self.images, rows, batch_id=batch_id, task_tag="recovered")
            if self.commit(IMAGES, [part] if part is not None else [], app_id=app_id, batch_id=batch_id,
                           replace=replace) is not None:
                recovered += 1
                log.warning("sink: committed the images rows of batch %d of %s, whose driver died "
                            "after its sources commit", batch_id, app_id)
            intent.unlink(missing_ok=True)
        return recovered
