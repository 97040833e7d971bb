"""What we do to the warehouse around dlt's own load: wait for a DuckDB file another process holds, undo loads
that never completed, and tell a collection's first load (nothing to merge into) from the others.

dlt applies a package job by job and records the package in ``_dlt_loads`` only at the end, so a process that
dies in between leaves rows in the warehouse that no completed load owns. Every row we write carries its
package's ``_dlt_load_id``; before a collection loads again, its rows whose load id is not in ``_dlt_loads`` are
deleted. Incremental state is read from the warehouse joined with ``_dlt_loads`` (dlt's own rule), so the
cursor steps back exactly as far as the rows do, and the next read fetches those documents again: no job is
ever applied twice and no child row outlives its parent's load.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dlt
import duckdb
from dlt.common.schema.utils import normalize_schema_name
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.job_client_impl import SqlJobClientBase

from mongodb_dlt.columns import DOCUMENT_KEY, LOAD_ID, ROOT_ID, ROW_ID

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_MAX_LOCK_WAIT_STEP_SECONDS = 10.0


class DestinationLockedError(Exception):
    """The DuckDB file stayed locked by another process for longer than ``destination.lock_timeout``."""


class DestinationNotWritableError(Exception):
    """The DuckDB file cannot be opened for writing for a reason waiting would not cure."""


def lock_holder(error: BaseException) -> str | None:
    """``PID 123 (/usr/bin/python3)`` when ``error`` is DuckDB refusing a file another process holds."""
    match = _LOCK_HOLDER.search(str(error))
    if match is None:
        return None
    return f"PID {match['pid']} ({match['program']})"


@contextmanager
def duckdb_connection(
    path: str, config: dict[str, Any], timeout_seconds: float, log: logging.Logger
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``path`` held for the block, so no other process can take the file between
    dlt's statements. While another process holds the file, waits with backoff up to ``timeout_seconds``,
    logging who holds it."""
    started = time.monotonic()
    delay = 0.25
    while True:
        try:
            connection = duckdb.connect(path, config=config)
            break
        except duckdb.IOException as error:
            holder = lock_holder(error)
            if holder is None:
                raise DestinationNotWritableError(f"cannot open DuckDB file {path} for writing: {error}") from None
            waited = time.monotonic() - started
            if waited >= timeout_seconds:
                raise DestinationLockedError(
                    f"DuckDB file {path} is locked by {holder}; waited {waited:.0f} s "
                    f"(destination.lock_timeout: {timeout_seconds:g} s). Close that process's connection, or "
                    "raise lock_timeout, then run again."
                ) from None
            log.info(f"waiting for DuckDB file {path}: locked by {holder} ({waited:.0f} s of {timeout_seconds:g} s)")
            time.sleep(min(delay, timeout_seconds - waited))
            delay = min(delay * 2, _MAX_LOCK_WAIT_STEP_SECONDS)
    try:
        yield connection
    finally:
        connection.close()


def _schema_name(pipeline: dlt.Pipeline) -> str:
    """The schema dlt names after a pipeline that extracts a standalone resource: snake_case, as it is stored."""
    return normalize_schema_name(pipeline.pipeline_name)


def _stored_tables(client: SqlJobClientBase, schema_name: str) -> dict[str, Any]:
    try:
        stored = client.get_stored_schema(schema_name)
    except DatabaseUndefinedRelation:
        return {}
    if stored is None:
        return {}
    tables: dict[str, Any] = json.loads(stored.schema).get("tables", {})
    return tables


def rollback_incomplete_loads(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Deletes, from every table of the pipeline's schema, the rows of loads that ``_dlt_loads`` does not record as
    complete. Returns the rows deleted per table (only tables that had any)."""
    undone: dict[str, int] = {}
    schema_name = _schema_name(pipeline)
    with pipeline.destination_client() as client:
        if not isinstance(client, SqlJobClientBase):
            return undone  # files (the filesystem destination) cannot be deleted by load id: README says so
        tables = _stored_tables(client, schema_name)
        sql = client.sql_client
        loads = sql.make_qualified_table_name(client.schema.loads_table_name)
        load_id = sql.escape_column_name(LOAD_ID)
        incomplete = f"{load_id} IS NOT NULL AND {load_id} NOT IN (SELECT load_id FROM {loads} WHERE status = 0)"
        targets = [
            name for name, table in sorted(tables.items())
            if not name.startswith("_dlt") and LOAD_ID in table.get("columns", {})
        ]
        for name in targets:
            qualified = sql.make_qualified_table_name(name)
            try:
                rows = sql.execute_sql(f"SELECT COUNT(*) FROM {qualified} WHERE {incomplete}")
            except DatabaseUndefinedRelation:
                continue
            if rows and rows[0][0]:
                undone[name] = int(rows[0][0])
        if undone:
            with sql.begin_transaction():
                for name in undone:
                    sql.execute_sql(f"DELETE FROM {sql.make_qualified_table_name(name)} WHERE {incomplete}")
    return undone


def remove_superseded_children(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Deletes the child rows of the latest complete load whose root row is not there. A document met twice in one
    read (its cursor moved ahead of the scan while the read ran) keeps only its newest root row after dlt's merge;
    the older version's array elements go here. Idempotent: run after each merge load, and again before the next
    one in case the process died in between. Returns the rows deleted per table (only tables that had any)."""
    removed: dict[str, int] = {}
    schema_name = _schema_name(pipeline)
    with pipeline.destination_client() as client:
        if not isinstance(client, SqlJobClientBase):
            return removed
        tables = _stored_tables(client, schema_name)
        roots = [name for name, table in tables.items() if DOCUMENT_KEY in table.get("columns", {})]
        children = sorted(name for name, table in tables.items() if ROOT_ID in table.get("columns", {}))
        if len(roots) != 1 or not children:
            return removed
        sql = client.sql_client
        loads = sql.make_qualified_table_name(client.schema.loads_table_name)
        root = sql.make_qualified_table_name(roots[0])
        load_id, root_id, row_id = (sql.escape_column_name(name) for name in (LOAD_ID, ROOT_ID, ROW_ID))
        latest = f"(SELECT MAX(load_id) FROM {loads} WHERE schema_name = %s AND status = 0)"
        orphan = f"c.{load_id} = {latest} AND NOT EXISTS (SELECT 1 FROM {root} AS r WHERE r.{row_id} = c.{root_id})"
        for name in children:
            child = sql.make_qualified_table_name(name)
            rows = sql.execute_sql(f"SELECT COUNT(*) FROM {child} AS c WHERE {orphan}", schema_name)
            if rows and rows[0][0]:
                sql.execute_sql(f"DELETE FROM {child} AS c WHERE {orphan}", schema_name)
                removed[name] = int(rows[0][0])
    return removed


def holds_no_tables_of(pipeline: dlt.Pipeline, root_table: str) -> bool:
    """True when the dataset (on a destination with ``information_schema``, such as DuckDB) has neither the
    collection's root table nor a table named like one of its child tables (``<root>__...``): a load can then
    append instead of merging. False whenever the warehouse cannot tell: merging is always right, appending only
    into nothing."""
    try:
        with pipeline.sql_client() as sql:
            rows = sql.execute_sql(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s"
                " AND (table_name = %s OR starts_with(table_name, %s))",
                pipeline.dataset_name,
                root_table,
                f"{root_table}__",
            )
    except Exception:
        return False
    return bool(rows) and rows[0][0] == 0
