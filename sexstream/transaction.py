"""Delta commits, idempotent per (app_id, batch_id), that may supersede older rows.

The driver calls `commit` once per table and micro-batch: every part of the batch in
ONE Delta commit carrying `Transaction(app_id, version=batch_id)`. With a `Replace`, the
same commit also supersedes the rows of some paths under one config: the files holding
them are rewritten without them (sources: the rows of a file's older bytes) or with
`current = false` (images: the older verdicts), and the old files removed, so a reader
sees the old rows or the new ones, never both. Older versions stay reachable through
Delta time travel.

Commits create a Delta checkpoint every `delta.checkpointInterval` (100) commits but do
not clean up expired log files: that lists the whole `_delta_log` after every commit,
so the daemon's maintenance does it on a schedule (`sexstream.maintenance`).

Measured with deltalake 1.6.6: `transaction_version(app_id)` survives checkpoints;
with `max_commit_retries=0` a commit lands on exactly the version after its snapshot or
raises `CommitFailedError`, and `commit` then reloads, re-checks the transaction version
and retries, so a batch is never committed twice, even by two processes racing on the
same (app_id, batch_id); `create_write_transaction` silently ignores new columns, so
they are added first with `DeltaTable.alter.add_columns` (a commit of its own).
"""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.schema import Field as DeltaField
from deltalake.transaction import (CommitProperties, PostCommitHookProperties, RemoveAction, Transaction,
                                   create_table_with_add_actions)

from sexstream.parts import PartFile, commit_schema, conform, delta_type, write_part
from sexstream.tables import open_table, refresh

log = logging.getLogger(__name__)

#: Attempts `commit` makes before giving up on a contended table.
MAX_ATTEMPTS = 100
#: Longest pause between two attempts, seconds.
MAX_BACKOFF_S = 0.5
#: Checkpoints as configured, no expired-log clean-up in the commit path.
HOOKS = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


@dataclass(frozen=True)
class Replace:
    """Rows a commit supersedes: those of `paths` under `config_hash`. `mode` "delete"
    removes them (the sources of older bytes); "uncurrent" keeps them with
    `current = false` (older verdicts in the images table)."""

    paths: frozenset[str]
    config_hash: str
    mode: str = "delete"


def _fit_part(table_dir: str, part: PartFile, schema: pa.Schema, batch_id: int) -> PartFile:
    """`part` itself if its columns have `schema`'s types, else a conformed rewrite of it.

    The original of a rewritten part is left in place, uncommitted (an orphan).
    """
    if not os.path.exists(os.path.join(table_dir, part.path)):
        raise FileNotFoundError(f"part file missing from {table_dir}: {part.path}")
    if all(delta_type(f.type).equals(delta_type(schema.field(f.name).type))
           for f in part.arrow_schema):
        return part
    log.info("rewriting %s to the table's column types", part.path)
    table = conform(pq.read_table(os.path.join(table_dir, part.path)), schema)
    fitted = write_part(table_dir, table, batch_id=batch_id, task_tag="fit")
    assert fitted is not None
    return fitted


def committed_version(table_dir: str | os.PathLike[str], app_id: str) -> int | None:
    """The last batch_id `app_id` committed to the table; None if none or no table."""
    table = open_table(table_dir)
    return None if table is None else table.transaction_version(app_id)


def current_schema(table_dir: str | os.PathLike[str]) -> pa.Schema | None:
    """The table's Arrow schema now, for `conform`; None if there is no table yet."""
    table = open_table(table_dir)
    return None if table is None else _schema_of(table)


def _schema_of(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def commit(table_dir: str | os.PathLike[str], parts: list[PartFile], *, app_id: str,
           batch_id: int, description: str | None = None, replace: Replace | None = None,
           table: DeltaTable | None = None) -> int | None:
    """Commit `parts` to the Delta table at `table_dir` in one commit, once per batch.

    The commit carries `Transaction(app_id, batch_id)`. Returns the table version
    created, or None when the table already holds batch `batch_id` (or a later one) of
    `app_id`: then nothing is written. The first commit creates the table (named after
    its folder, with `description`). With no part, an existing table records the batch
    in an empty commit; a missing table stays missing (None). `replace` supersedes
    older rows in the same commit (see the module's doc). `table`: an open handle on
    the table, brought up to date (`tables.refresh`) rather than opened again.

    Concurrent writers (other processes, same or other app_id) are expected: on a
    commit conflict the table is reloaded, the transaction version re-checked, and the
    commit retried after a randomized back-off, at most `MAX_ATTEMPTS` times.

    Raises
    ------
    CommitFailedError
        Still conflicting after `MAX_ATTEMPTS` attempts.
    FileNotFoundError
        A part's file is missing from `table_dir`.
    """
    if batch_id < 0:
        raise ValueError(f"batch_id must be >= 0, not {batch_id}")
    table_dir = str(table_dir)
    parts = list(parts)
    now_ms = time.time_ns() // 1_000_000
    transaction = CommitProperties(app_transactions=[Transaction(app_id, batch_id, now_ms)],
                                   max_commit_retries=0)
    replacing = replace is not None and bool(replace.paths)
    backoff, failure = 0.01, None
    for attempt in range(MAX_ATTEMPTS):
        if failure is not None:
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(2 * backoff, MAX_BACKOFF_S)
        failure = None
        if table is not None:
            refresh(table, table_dir)
        else:
            table = open_table(table_dir)
        if table is not None:
            done = table.transaction_version(app_id)
            if done is not None and done >= batch_id:
                return None
        current = _schema_of(table) if table is not None else None
        schema = commit_schema(current, parts)
        if schema is None:
            return None
        parts = [_fit_part(table_dir, part, schema, batch_id) for part in parts]
        actions = [part.add_action() for part in parts]
        try:
            if table is None:
                create_table_with_add_actions(
                    table_dir, DeltaSchema.from_arrow(schema), actions, mode="error",
                    name=Path(table_dir).name, description=description,
                    commit_properties=transaction, post_commithook_properties=HOOKS)
                return 0
            added = [f for f in schema if f.name not in current.names]
            if added:
                table.alter.add_columns([DeltaField.from_arrow(f) for f in added],
                                        commit_properties=CommitProperties(max_commit_retries=0))
                continue            # reload: the append must start from the new schema
            if replacing:
                actions = _replacement(table, table_dir, replace, schema, batch_id) + actions
            table.create_write_transaction(actions, "append", schema, commit_properties=transaction,
                                           post_commithook_properties=HOOKS)
            return table.version() + 1
        except CommitFailedError as exc:
            failure = exc
        except DeltaError as exc:
            if table is not None or open_table(table_dir) is None:
                raise
            failure = exc           # lost the race to create the table
        log.debug("commit of %s batch %d to %s conflicted (attempt %d): %s",
                  app_id, batch_id, table_dir, attempt + 1, failure)
    raise CommitFailedError(f"{table_dir}: batch {batch_id} of {app_id} still conflicting "
                            f"after {MAX_ATTEMPTS} attempts: {failure}")


def _candidates(adds: pa.Table, replace: Replace) -> list[int]:
    """Rows of `adds` (the table's add actions with their statistics) whose files may hold
    rows of `replace`: the path and config statistics do not rule them out."""
    def may_hold(column: str, values) -> pa.ChunkedArray:
        lo, hi = f"min.{column}", f"max.{column}"
        if lo not in adds.column_names or hi not in adds.column_names:
            return pa.chunked_array([pa.array([True] * adds.num_rows)])
        hit = None
        for v in values:
            inside = pc.and_kleene(pc.less_equal(adds[lo], v), pc.greater_equal(adds[hi], v))
            hit = inside if hit is None else pc.or_kleene(hit, inside)
        return pc.fill_null(hit, True)  # no statistics: it may

    mask = pc.and_(may_hold("path", sorted(replace.paths)), may_hold("config_hash", [replace.config_hash]))
    return [i for i, m in enumerate(mask.to_pylist()) if m]


def _replacement(table: DeltaTable, table_dir: str, replace: Replace, schema: pa.Schema,
                 batch_id: int) -> list:
    """Remove actions for the files holding rows of `replace`, and add actions for their
    rewrites (without those rows, or with them marked not current)."""
    adds = pa.table(table.get_add_actions(flatten=True))
    actions: list = []
    now_ms = time.time_ns() // 1_000_000
    paths = pa.array(sorted(replace.paths), pa.string())
    for i in _candidates(adds, replace):
        rel = adds["path"][i].as_py()
        file = os.path.join(table_dir, unquote(rel))
        names = pq.read_schema(file).names
        if "path" not in names:
            continue
        keys = pq.read_table(file, columns=[c for c in ("path", "config_hash", "current") if c in names])
        hit = pc.is_in(keys["path"], value_set=paths)
        if "config_hash" in names:
            hit = pc.and_(hit, pc.equal(keys["config_hash"], replace.config_hash))
        if replace.mode == "uncurrent" and "current" in names:
            hit = pc.and_(hit, pc.invert(pc.fill_null(pc.equal(keys["current"], False), False)))
        hit = pc.fill_null(hit, False)
        if not pc.any(hit).as_py():
            continue
        rows = conform(pq.read_table(file), schema)
        if replace.mode == "delete":
            rows = rows.filter(pc.invert(hit))
        else:
            old = rows["current"] if "current" in rows.column_names else pa.nulls(rows.num_rows, pa.bool_())
            new = pc.if_else(hit, False, pc.fill_null(old, True))
            rows = (rows.set_column(rows.column_names.index("current"), "current", new)
                    if "current" in rows.column_names else rows.append_column("current", new))
        actions.append(RemoveAction(rel, True, now_ms, int(adds["size_bytes"][i].as_py())))
        part = write_part(table_dir, rows, batch_id=batch_id, task_tag="rewrite")
        if part is not None:
            actions.append(part.add_action())
    return actions
