"""Every SQL statement we run ourselves, around dlt's own load: undo loads that never completed, drop an older
version's array elements, tell a collection's first load (nothing to merge into) from the others, count what a
load left for the ``rows_match_source`` check, and check extracted files for a repeated document key.

dlt applies a package job by job and records the package in ``_dlt_loads`` only at the end, so a process that
dies in between leaves rows in the warehouse that no completed load owns. Every row we write carries its
package's ``_dlt_load_id``; before a collection loads again, its rows whose load id is not in ``_dlt_loads`` are
deleted. Incremental state is read from the warehouse joined with ``_dlt_loads`` (dlt's own rule), so the
cursor steps back exactly as far as the rows do, and the next read fetches those documents again: no job is
ever applied twice and no child row outlives its parent's load.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

import dlt
import duckdb
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.job_client_impl import SqlJobClientBase

from mongodb_dlt.errors import describe_error
from mongodb_dlt.extract.columns import DOCUMENT_KEY, LOAD_ID, PARTITION, ROOT_ID, ROW_ID
from mongodb_dlt.naming import schema_name as _pipeline_schema
from mongodb_dlt.results import RowCounts

_LOAD_ID_TEXT = re.compile(r"[0-9.]+")

def _schema_name(pipeline: dlt.Pipeline) -> str:
    return _pipeline_schema(pipeline.pipeline_name)


def _stored_tables(client: SqlJobClientBase, schema_name: str) -> dict[str, Any]:
    try:
        stored = client.get_stored_schema(schema_name)
    except DatabaseUndefinedRelation:
        return {}
    if stored is None:
        return {}
    tables: dict[str, Any] = json.loads(stored.schema).get("tables", {})
    return tables


def rollback_incomplete_loads(pipeline: dlt.Pipeline, partition: str | None = None) -> dict[str, int]:
    """Deletes, from every table of the pipeline's schema, the rows of loads that ``_dlt_loads`` does not record as
    complete. Returns the rows deleted per table (only tables that had any). With ``partition``, only the rows of
    that partition: other partitions of the collection may be loading at this moment, their rows not yet recorded."""
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
        params = () if partition is None else (partition,)
        if partition is not None:
            incomplete += f" AND {sql.escape_column_name(PARTITION)} = %s"
        targets = [
            name for name, table in sorted(tables.items())
            if not name.startswith("_dlt") and LOAD_ID in table.get("columns", {})
            and (partition is None or PARTITION in table.get("columns", {}))
        ]
        for name in targets:
            qualified = sql.make_qualified_table_name(name)
            try:
                rows = sql.execute_sql(f"SELECT COUNT(*) FROM {qualified} WHERE {incomplete}", *params)
            except DatabaseUndefinedRelation:
                continue
            if rows and rows[0][0]:
                undone[name] = int(rows[0][0])
        if undone:
            with sql.begin_transaction():
                for name in undone:
                    sql.execute_sql(f"DELETE FROM {sql.make_qualified_table_name(name)} WHERE {incomplete}", *params)
    return undone


def stored_schemas(pipeline: dlt.Pipeline) -> list[dict[str, Any]]:
    """Every version of the pipeline's schema the warehouse holds, newest first. Loads that ran at once (the
    partitions of one collection) each stored the version they started from plus their own changes: together they
    hold every table and column the collection has."""
    with pipeline.destination_client() as client:
        if not isinstance(client, SqlJobClientBase):
            return []
        sql = client.sql_client
        versions = sql.make_qualified_table_name(client.schema.version_table_name)
        try:
            rows = sql.execute_sql(
                f"SELECT schema FROM {versions} WHERE schema_name = %s ORDER BY inserted_at DESC",
                _schema_name(pipeline),
            )
        except DatabaseUndefinedRelation:
            return []
    return [json.loads(_schema_text(row[0])) for row in rows or []]


def _schema_text(stored: str) -> str:
    # dlt compresses the schemas it stores on some destinations (base64 of zlib), as in its get_stored_schema
    try:
        return zlib.decompress(base64.b64decode(stored, validate=True)).decode("utf-8")
    except (ValueError, zlib.error):
        return stored


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


def count_rows(pipeline: dlt.Pipeline, root_table: str, load_ids: Sequence[str], whole_table: bool) -> RowCounts:
    """The root table's rows that this load added and, for a collection read whole, its distinct documents.
    Never raises: the load is committed by now, and a count that cannot be taken is the check's to report."""
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(root_table)
            rows_added = 0
            if load_ids:
                if not all(_LOAD_ID_TEXT.fullmatch(load_id) for load_id in load_ids):
                    raise ValueError(f"unexpected load ids {load_ids}")
                ids = ", ".join(f"'{load_id}'" for load_id in load_ids)
                rows_added = _count(
                    client, f"SELECT COUNT(*) FROM {table} WHERE {client.escape_column_name(LOAD_ID)} IN ({ids})"
                )
            warehouse_rows = None
            if whole_table:
                warehouse_rows = _count(
                    client, f"SELECT COUNT(DISTINCT {client.escape_column_name(DOCUMENT_KEY)}) FROM {table}"
                )
            return RowCounts(warehouse_rows=warehouse_rows, rows_added=rows_added)
    except SqlClientNotAvailable:
        return RowCounts(
            not_verifiable=f"destination {pipeline.destination.destination_name} cannot be queried with SQL"
        )
    except Exception as error:
        return RowCounts(error=describe_error(error))


def _count(client: Any, sql: str) -> int:
    try:
        rows = client.execute_sql(sql)
    except DatabaseUndefinedRelation:
        return 0  # nothing was ever loaded: dlt creates no table for a collection without documents
    return int(rows[0][0]) if rows else 0


def keys_repeat(parquet_files: Sequence[str], duckdb_config: dict[str, Any], temp_directory: str) -> bool:
    """True when a ``_mongo_key`` occurs more than once across the extracted root-table files (read with a local
    DuckDB, never the warehouse). Raises ``duckdb.Error`` when the files cannot be read."""
    with duckdb.connect(config=duckdb_config) as connection:
        connection.execute("SET temp_directory = ?", [temp_directory])
        found = connection.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM read_parquet(?) GROUP BY \"{DOCUMENT_KEY}\""
            " HAVING COUNT(*) > 1 LIMIT 1)",
            [list(parquet_files)],
        ).fetchone()
    return found is None or found[0] != 0
