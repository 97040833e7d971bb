"""The Dagster resource that owns the destination and loads one collection through one dlt pipeline.

Each collection has its own pipeline (``mongodb_dlt__<database>__<collection>``), so its incremental state and
its failures never touch a sibling's. Every pipeline of a database writes into that database's dataset. A load:

1. takes the collection's lock (locking.py): one writer per collection, released when its process dies;
2. opens the warehouse (waiting while another process holds a DuckDB file), restores state and schema from it
   into an emptied working folder, and undoes any load the warehouse never recorded as complete (warehouse.py);
3. extracts and normalizes with the warehouse closed, so analysts can query meanwhile;
4. opens the warehouse again and loads (and, for the ``rows_match_source`` check, counts the rows it holds). A load
   that fails has its rows undone at once and is never replayed.

Inside one process, writers to one destination take turns (several dlt pipelines committing to one DuckDB
catalog at once fail with write-write conflicts); across processes, DuckDB's own file lock, waited for, does.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dagster as dg
import dlt
import duckdb
import pymongo.errors
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.common.pipeline import ExtractInfo
from dlt.common.schema import Schema
from dlt.common.schema.typing import MERGE_DISPOSITION_HINTS
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed
from pydantic import Field

from mongodb_dlt.columns import DOCUMENT_KEY, LOAD_ID
from mongodb_dlt.config import (
    DEFAULTS,
    CollectionConfig,
    DestinationConfig,
    mask_secrets,
    resolve_connection_url,
)
from mongodb_dlt.locking import collection_lock
from mongodb_dlt.source import ExtractStats, NewColumn, display_cursor, mongodb_collection
from mongodb_dlt.warehouse import (
    DestinationNotWritableError,
    duckdb_connection,
    holds_no_tables_of,
    remove_superseded_children,
    rollback_incomplete_loads,
)

DEFAULT_PIPELINES_DIR = ".mongodb_dlt/pipelines"

# Errors a retry with backoff can cure: the server or the network had a moment, or a cursor timed out.
# AutoReconnect covers ConnectionFailure's transient children (NetworkTimeout, ServerSelectionTimeoutError).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    pymongo.errors.AutoReconnect,
    pymongo.errors.CursorNotFound,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WaitQueueTimeoutError,
)

PROGRESS_LOG_EVERY_SECONDS = 10.0

# Modules dlt imports on first use (found by diffing sys.modules around a first load). Collections start loading
# in several threads at once, and Python may hand a thread a partially initialized module when two threads
# import it at the same moment, so they are imported once, under a lock, before the first load.
LAZILY_IMPORTED_BY_DLT = (
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.pandas_compat",
    "pyarrow.vendored.version",
    "pendulum.locales.en.locale",
    "sqlalchemy",
    "dlt.common.libs.pyarrow",
    "dlt.common.libs.pandas",
    "dlt.common.libs.sql_alchemy_compat",
)
_TRUNCATE_STAGING = "load.truncate_staging_dataset"
DEDUPLICATED_HINT = MERGE_DISPOSITION_HINTS["deduplicated"]
"""dlt's table hint for a merge whose staging rows need no deduplication (``x-stage-data-deduplicated``)."""
_imports_ready = threading.Event()
_imports_lock = threading.Lock()

_destination_locks: dict[str, threading.Lock] = {}
_destination_locks_guard = threading.Lock()


@contextmanager
def _destination_write_lock(destination_id: str) -> Iterator[None]:
    with _destination_locks_guard:
        lock = _destination_locks.setdefault(destination_id, threading.Lock())
    with lock:
        yield


def _import_lazy_modules(loader: MongoDltLoader) -> None:
    if _imports_ready.is_set():
        return
    with _imports_lock:
        if not _imports_ready.is_set():
            for module in LAZILY_IMPORTED_BY_DLT:
                importlib.import_module(module)
            _ = loader.destination().client_class  # imports the destination's client module
            _imports_ready.set()


@dataclass(frozen=True)
class RowCounts:
    """The counts ``rows_match_source`` compares, taken around one load (None: not taken)."""

    source_before: int | None = None
    """Documents matching the read's query just before the read (collections read whole only)."""
    source_after: int | None = None
    """The same count just after the read."""
    warehouse_rows: int | None = None
    """Distinct ``_mongo_key`` in the root table after the load (collections read whole only)."""
    rows_added: int | None = None
    """Root rows carrying this load's ``_dlt_load_id``."""
    not_verifiable: str | None = None
    """Why the warehouse could not be counted at all (a destination without SQL)."""
    error: str | None = None
    """Why MongoDB or the warehouse could not be counted."""


def _empty_staging_after_loads() -> None:
    """Merge loads go through ``<dataset>_staging``, which dlt would leave holding a copy of the last load of every
    merge collection: have dlt truncate it after each load instead. A value the user configured is kept."""
    try:
        configured = dlt.config[_TRUNCATE_STAGING]
    except KeyError:
        configured = None
    if configured is None:
        dlt.config[_TRUNCATE_STAGING] = True


@dataclass(frozen=True)
class CollectionLoadResult:
    """What one collection's load did, success or failure: the factory turns it into Dagster events."""

    database: str
    collection: str
    dataset_name: str
    table_name: str
    rows_loaded: int = 0
    child_tables: dict[str, int] = field(default_factory=dict)
    columns: list[tuple[str, str, bool]] = field(default_factory=list)
    column_paths: dict[str, dict[str, str]] = field(default_factory=dict)
    """Table -> column -> the MongoDB path and BSON type it holds."""
    documents_read: int = 0
    """Documents converted and loaded; ``skipped_at_boundary`` more were read and skipped on purpose."""
    skipped_at_boundary: int = 0
    """Documents at the last cursor value that the previous incremental load already loaded."""
    new_columns: list[NewColumn] = field(default_factory=list)
    row_counts: RowCounts | None = None
    """Only when the load was asked to count (``count_rows``)."""
    schema_changes: list[str] = field(default_factory=list)
    cursor_field: str | None = None
    cursor_before: Any = None
    """The cursor the load started from, as kept in the state; None when there was no state yet."""
    cursor_initial_value: Any = None
    """The configured ``initial_value`` (ISO-8601 for dates), where a load without state starts."""
    cursor_after: Any = None
    duration_seconds: float = 0.0
    attempts: int = 1
    load_ids: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


def is_transient(error: BaseException) -> bool:
    """True when ``error`` or anything in its cause chain is a transient MongoDB error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, TRANSIENT_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe_error(error: BaseException) -> str:
    """The innermost meaningful message of a (dlt-wrapped) error, secrets masked."""
    root = error
    while isinstance(root, PipelineStepFailed) and root.__cause__ is not None:
        root = root.__cause__
    if (
        type(root).__name__ == "ResourceExtractionError"
        and root.__cause__ is not None
    ):
        root = root.__cause__
    return mask_secrets(f"{type(root).__name__}: {root}")


def _incremental_state(pipeline: dlt.Pipeline, resource_name: str, cursor_field: str) -> Any:
    sources = pipeline.state.get("sources", {})
    for source_state in sources.values():
        incremental = source_state.get("resources", {}).get(resource_name, {}).get("incremental", {})
        if cursor_field in incremental:
            return incremental[cursor_field].get("last_value")
    return None


def _schema_changes(schema_update: dict[str, Any]) -> list[str]:
    changes = []
    for table_name, table in sorted(schema_update.items()):
        if table_name.startswith("_dlt"):
            continue
        columns = table.get("columns", {})
        described = ", ".join(
            f"`{name}` {column.get('data_type', '?')}" for name, column in columns.items()
        )
        changes.append(f"- `{table_name}`: {described}" if described else f"- `{table_name}`")
    return changes


def _table_columns(schema: Schema, table_name: str) -> list[tuple[str, str, bool]]:
    if table_name not in schema.tables:
        return []
    return [
        (name, str(column.get("data_type", "unknown")), bool(column.get("nullable", True)))
        for name, column in schema.get_table_columns(table_name).items()
    ]


class MongoDltLoader(dg.ConfigurableResource):
    """Runs one collection through its own dlt pipeline into the destination named in the YAML."""

    destination_type: str = Field(default="duckdb", description="dlt destination name, e.g. duckdb, bigquery")
    destination_path: str | None = Field(default=None, description="DuckDB database file, absolute")
    destination_project: str | None = Field(default=None, description="BigQuery project id")
    destination_location: str | None = Field(default=None, description="BigQuery location")
    destination_options: dict[str, Any] = Field(default_factory=dict)
    memory_limit: str | None = Field(default=None, description="DuckDB memory_limit for loads, e.g. 256MB")
    lock_timeout: float = Field(
        default=DEFAULTS["destination.lock_timeout"],
        description="seconds a DuckDB load waits for a file another process holds",
    )
    loader_file_format: str | None = Field(
        default=None, description="dlt file format between normalize and load; None picks one per destination"
    )
    pipelines_dir: str | None = Field(
        default=None,
        description="dlt working folder (default .mongodb_dlt/pipelines in the working directory). Scratch "
        "space: every load restores its state from the destination; each destination gets its own folder inside.",
    )

    @classmethod
    def from_config(
        cls, destination: DestinationConfig, pipelines_dir: str | None = None, base: Path | None = None
    ) -> MongoDltLoader:
        """Resolves relative paths (the DuckDB file, the working folder) once, against ``base`` (default: the
        working directory, where the default config path is found too)."""
        base = (base or Path.cwd()).absolute()
        path = destination.path
        if destination.type == "duckdb" and path and not path.startswith(":"):
            path = str(base / Path(path).expanduser())
        return cls(
            destination_type=destination.type,
            destination_path=path,
            destination_project=destination.project,
            destination_location=destination.location,
            destination_options=dict(destination.options),
            loader_file_format=destination.loader_file_format,
            memory_limit=destination.memory_limit,
            lock_timeout=destination.lock_timeout,
            pipelines_dir=str(base / Path(pipelines_dir or DEFAULT_PIPELINES_DIR).expanduser()),
        )

    @property
    def destination_id(self) -> str:
        """Identifies one writable destination: a DuckDB file, or a warehouse project."""
        return f"{self.destination_type}:{self.destination_path or self.destination_project or ''}"

    @property
    def working_dir(self) -> Path:
        """This destination's own folder inside ``pipelines_dir``: local files never serve two warehouses."""
        digest = hashlib.sha256(self.destination_id.encode()).hexdigest()[:12]
        return Path(self.pipelines_dir or DEFAULT_PIPELINES_DIR).absolute() / f"{self.destination_type}-{digest}"

    @property
    def file_format(self) -> str:
        """Parquet keeps normalize and load memory flat; BigQuery accepts JSON columns only from jsonl."""
        if self.loader_file_format:
            return self.loader_file_format
        return "jsonl" if self.destination_type == "bigquery" else "parquet"

    def destination(self, connection: duckdb.DuckDBPyConnection | None = None) -> Destination[Any, Any]:
        options: dict[str, Any] = dict(self.destination_options)
        if connection is not None:
            options["credentials"] = DuckDbCredentials(connection)
        if self.destination_type == "bigquery":
            if self.destination_location:
                options["location"] = self.destination_location
            if self.destination_project:
                options["project_id"] = self.destination_project
        return Destination.from_reference(self.destination_type, **options)

    @contextmanager
    def session(self, log: logging.Logger) -> Iterator[Destination[Any, Any]]:
        """The destination for one stretch of writing. For DuckDB the file is opened once, waiting while another
        process holds it, and held until the block ends, so a reader cannot slip in between dlt's statements.
        Inside one process, writers to one destination take turns: dlt pipelines committing to one DuckDB
        catalog at once fail with write-write conflicts."""
        with _destination_write_lock(self.destination_id):
            if self.destination_type != "duckdb" or not self.destination_path:
                yield self.destination()
                return
            try:
                Path(self.destination_path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DestinationNotWritableError(
                    f"cannot open DuckDB file {self.destination_path} for writing: {error}"
                ) from None
            config: dict[str, Any] = {"preserve_insertion_order": False}  # lets DuckDB insert in less memory
            if self.memory_limit:
                config["memory_limit"] = self.memory_limit
            with duckdb_connection(self.destination_path, config, self.lock_timeout, log) as connection:
                yield self.destination(connection)

    def pipeline_name(self, collection: CollectionConfig) -> str:
        return f"mongodb_dlt__{collection.database}__{collection.asset_name}"

    def pipeline(
        self, collection: CollectionConfig, dataset_name: str, destination: Destination[Any, Any]
    ) -> dlt.Pipeline:
        """The collection's pipeline with its state and schema as the warehouse holds them, after undoing any
        load the warehouse never recorded as complete. The local working folder is dropped first: it is scratch
        space, and state from one warehouse or an older run must never drive a load."""
        name = self.pipeline_name(collection)
        shutil.rmtree(self.working_dir / name, ignore_errors=True)  # what Pipeline.drop() removes
        pipeline = dlt.pipeline(pipeline_name=name, pipelines_dir=str(self.working_dir), dataset_name=dataset_name)
        pipeline.sync_destination(destination=destination, dataset_name=dataset_name)
        undone = rollback_incomplete_loads(pipeline)
        if undone:
            logging.getLogger(__name__).warning(
                f"{collection.database}.{collection.name}: removed the rows of a load that never completed "
                f"(the process died or the load failed): "
                + ", ".join(f"{table}: {rows}" for table, rows in undone.items())
            )
        _remove_superseded_children(pipeline, collection, logging.getLogger(__name__))
        return pipeline

    def load_collection(
        self,
        collection: CollectionConfig,
        dataset_name: str,
        log: logging.Logger | None = None,
        run_id: str | None = None,
        count_rows: bool = False,
    ) -> CollectionLoadResult:
        """Load one collection, retrying transient errors with exponential backoff. Never raises for a
        failure of the collection itself: the error is in the result so siblings keep going. ``count_rows`` also
        takes the counts of ``RowCounts``: MongoDB's just before and after the read, for a collection read whole, and
        the warehouse's right after the load."""
        log = log or logging.getLogger(__name__)
        _import_lazy_modules(self)
        _empty_staging_after_loads()
        started = time.monotonic()
        attempts = collection.retries.max_attempts
        attempt = 1
        while True:
            try:
                result = self._load_once(collection, dataset_name, log, run_id, count_rows)
            except Exception as error:
                message = describe_error(error)
                if attempt >= attempts or not is_transient(error):
                    log.error(f"{collection.database}.{collection.name}: failed after {attempt} attempt(s): {message}")
                    return CollectionLoadResult(
                        database=collection.database,
                        collection=collection.name,
                        dataset_name=dataset_name,
                        table_name=collection.table_name,
                        duration_seconds=time.monotonic() - started,
                        attempts=attempt,
                        error=message,
                    )
                delay = collection.retries.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    f"{collection.database}.{collection.name}: attempt {attempt}/{attempts} failed"
                    f" with a transient error ({message}); retrying in {delay:g}s"
                )
                time.sleep(delay)
                attempt += 1
                continue
            return replace(result, duration_seconds=time.monotonic() - started, attempts=attempt)

    def _load_once(
        self,
        collection: CollectionConfig,
        dataset_name: str,
        log: logging.Logger,
        run_id: str | None,
        count_rows: bool,
    ) -> CollectionLoadResult:
        label = f"{collection.database}.{collection.name}"
        lock_file = self.working_dir / f"{self.pipeline_name(collection)}.lock"
        with collection_lock(lock_file, label, run_id):
            # Finds out before the extract whether the warehouse can be written, and undoes a load that died.
            with self.session(log) as destination:
                pipeline = self.pipeline(collection, dataset_name, destination)
                root_table = _root_table(pipeline, collection)
                first_load = (
                    collection.write_disposition == "merge"
                    and self.destination_type == "duckdb"
                    and holds_no_tables_of(pipeline, root_table)
                )
            return self._extract_and_load(pipeline, collection, dataset_name, root_table, log, count_rows, first_load)

    def _extract_and_load(
        self,
        pipeline: dlt.Pipeline,
        collection: CollectionConfig,
        dataset_name: str,
        root_table: str,
        log: logging.Logger,
        count_rows: bool,
        first_load: bool,
    ) -> CollectionLoadResult:
        label = f"{collection.database}.{collection.name}"
        cursor_field = collection.incremental.cursor_field if collection.incremental else None
        cursor_before = _incremental_state(pipeline, collection.table_name, cursor_field) if cursor_field else None
        stats = ExtractStats(on_progress=_ProgressLogger(label, log))
        resource = mongodb_collection(
            resolve_connection_url(collection),
            collection.database,
            collection.name,
            filter=collection.filter,
            projection=collection.projection,
            limit=collection.limit,
            incremental=collection.incremental,
            write_disposition=collection.write_disposition,
            primary_key=collection.primary_key,
            batch_size=collection.batch_size,
            max_table_nesting=collection.max_table_nesting,
            json_paths=collection.json_paths,
            max_object_keys=collection.max_object_keys,
            table_name=collection.table_name,
            schema_contract=collection.schema_contract,
            stats=stats,
            count_documents=count_rows and reads_whole_collection(collection),
            first_load=first_load,
        )
        # a failed extract leaves nothing in the warehouse; the next run drops its package with the folder
        extract_info = pipeline.extract(resource, loader_file_format=self.file_format)  # type: ignore[arg-type]
        try:
            met_once = collection.write_disposition == "merge" and _declare_deduplicated(
                pipeline, extract_info, root_table, self.memory_limit, log
            )
            if first_load and met_once:
                _append_first_load(pipeline, resource.name)
            pipeline.normalize()
            with self.session(log) as destination:
                load_info = pipeline.load(destination=destination)
                if not met_once:  # a read that met no document twice left no older version behind
                    _remove_superseded_children(pipeline, collection, log)
                warehouse = (
                    _count_warehouse(pipeline, root_table, load_info.loads_ids, reads_whole_collection(collection))
                    if count_rows
                    else None
                )
        except Exception:
            # A package that failed is never replayed, and its rows leave the warehouse now rather than at the
            # next run: the next run reads the collection again from the state the warehouse holds.
            try:
                with self.session(log) as destination:
                    self.pipeline(collection, dataset_name, destination)
            except Exception as cleanup_error:
                log.warning(f"{label}: the failed load's rows stay until the next run removes them "
                            f"({describe_error(cleanup_error)})")
            raise

        schema_update: dict[str, Any] = {}
        for package in load_info.load_packages:
            schema_update.update(package.schema_update)
        rows = dict(stats.rows)
        return CollectionLoadResult(
            database=collection.database,
            collection=collection.name,
            dataset_name=dataset_name,
            table_name=root_table,
            rows_loaded=rows.pop(root_table, 0),
            child_tables=rows,
            columns=_table_columns(pipeline.default_schema, root_table),
            column_paths=stats.columns,
            schema_changes=_schema_changes(schema_update),
            cursor_field=cursor_field,
            cursor_before=cursor_before,
            cursor_initial_value=display_cursor(collection.incremental.initial_value)
            if collection.incremental
            else None,
            cursor_after=_incremental_state(pipeline, collection.table_name, cursor_field) if cursor_field else None,
            load_ids=list(load_info.loads_ids),
            documents_read=stats.documents,
            skipped_at_boundary=stats.skipped_at_boundary,
            new_columns=stats.new_columns,
            row_counts=_with_source_counts(warehouse, stats) if warehouse is not None else None,
        )


def reads_whole_collection(collection: CollectionConfig) -> bool:
    """A merge or replace collection without incremental reads every document its filter matches on each run,
    so its root table should hold as many documents as MongoDB does; any other adds what it reads."""
    return collection.incremental is None and collection.write_disposition in ("merge", "replace")


_LOAD_ID_TEXT = re.compile(r"[0-9.]+")


def _count_warehouse(
    pipeline: dlt.Pipeline, root_table: str, load_ids: list[str], whole_table: bool
) -> RowCounts:
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
                rows_added = _count(client, f"SELECT COUNT(*) FROM {table} WHERE "
                                            f"{client.escape_column_name(LOAD_ID)} IN ({ids})")
            warehouse_rows = None
            if whole_table:
                warehouse_rows = _count(
                    client, f"SELECT COUNT(DISTINCT {client.escape_column_name(DOCUMENT_KEY)}) FROM {table}"
                )
            return RowCounts(warehouse_rows=warehouse_rows, rows_added=rows_added)
    except SqlClientNotAvailable:
        return RowCounts(not_verifiable=f"destination {pipeline.destination.destination_name} cannot be queried "
                                        "with SQL")
    except Exception as error:
        return RowCounts(error=describe_error(error))


def _with_source_counts(warehouse: RowCounts, stats: ExtractStats) -> RowCounts:
    counts = replace(warehouse, source_before=stats.count_before, source_after=stats.count_after)
    if stats.count_error is not None and counts.error is None:
        counts = replace(counts, error=f"MongoDB could not count the collection's documents: {stats.count_error}")
    return counts


def _count(client: Any, sql: str) -> int:
    try:
        rows = client.execute_sql(sql)
    except DatabaseUndefinedRelation:
        return 0  # nothing was ever loaded: dlt creates no table for a collection without documents
    return int(rows[0][0]) if rows else 0


def _remove_superseded_children(pipeline: dlt.Pipeline, collection: CollectionConfig, log: logging.Logger) -> None:
    """After a merge load (and before the next, should the process have died in between): the array elements of
    a document's older version, when the read met the document twice (warehouse.remove_superseded_children). A
    failure here is logged, not raised: the load is complete, and the next load tries again."""
    if collection.write_disposition != "merge":
        return
    label = f"{collection.database}.{collection.name}"
    try:
        removed = remove_superseded_children(pipeline)
    except Exception as error:
        log.warning(f"{label}: could not check for an older version's array elements ({describe_error(error)}); "
                    "the next load checks again")
        return
    if removed:
        log.info(f"{label}: documents met twice by the read (updated while it ran) keep their newest version; "
                 "removed the older version's array elements: "
                 + ", ".join(f"{table}: {rows}" for table, rows in removed.items()))


def _root_table(pipeline: dlt.Pipeline, collection: CollectionConfig) -> str:
    naming = pipeline.default_schema.naming if pipeline.default_schema_name else Schema(pipeline.pipeline_name).naming
    return naming.normalize_tables_path(collection.table_name)


def _append_first_load(pipeline: dlt.Pipeline, resource_name: str) -> None:
    """A merge collection's first load, whose documents each came once, goes in by dlt's append: nothing in the
    warehouse to merge with, so no staging copy and no merge statements. The next extract sets merge again (the
    source's hints), and that load merges into what this one appended."""
    for table in pipeline.default_schema.data_tables():
        if table.get("resource") == resource_name:
            table["write_disposition"] = "append"
            for column in table["columns"].values():
                column.pop("hard_delete", None)  # merge-only: dlt would warn that append ignores it


class _StorageSchemaUsed(logging.Filter):
    """Drops dlt's warning that normalize used the pipeline's schema rather than the one saved with the extracted
    package, for our pipelines: ``_declare_deduplicated`` sets a hint between the two steps for that purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return " with schema mongodb_dlt_" not in message or "from extract package schema hash" not in message


_STORAGE_SCHEMA_USED = _StorageSchemaUsed()


def _declare_deduplicated(
    pipeline: dlt.Pipeline,
    extract_info: ExtractInfo,
    root_table: str,
    memory_limit: str | None,
    log: logging.Logger,
) -> bool:
    """Tells dlt's merge whether the extracted root rows hold each document once, as they do unless the read met a
    document twice: dlt then inserts them as they are instead of numbering every staging row per key to keep one
    (a window over the whole table, most of a first load's SQL). Decided afresh for every package from the rows
    themselves, never carried over; when in doubt dlt deduplicates. True when every document came once."""
    table = pipeline.default_schema.tables.get(root_table)
    if table is None:
        return True  # no documents: nothing to merge
    files = [
        job.file_path
        for package in extract_info.load_packages
        for job in package.jobs.get("new_jobs", [])
        if job.job_file_info.table_name == root_table
    ]
    logging.getLogger("dlt").addFilter(_STORAGE_SCHEMA_USED)
    unique = False
    if files and all(file.endswith(".parquet") for file in files):
        config = {"memory_limit": memory_limit} if memory_limit else {}
        try:
            with duckdb.connect(config=config) as connection:
                connection.execute("SET temp_directory = ?", [str(Path(pipeline.working_dir) / "duckdb_tmp")])
                found = connection.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM read_parquet(?) GROUP BY \"{DOCUMENT_KEY}\""
                    " HAVING COUNT(*) > 1 LIMIT 1)",
                    [files],
                ).fetchone()
            unique = found is not None and found[0] == 0
        except duckdb.Error as error:
            log.debug(f"{root_table}: could not count repeated document keys ({error}); dlt deduplicates")
    table[DEDUPLICATED_HINT] = unique  # type: ignore[literal-required]
    return unique


class _ProgressLogger:
    """Logs the running total of documents read at most every few seconds, from the second batch on: the first
    batch's wait includes the server's query planning and sorting, which says nothing about the read's speed."""

    def __init__(self, label: str, log: logging.Logger) -> None:
        self.label = label
        self.log = log
        self.first_batch_at: float | None = None
        self.first_batch_documents = 0
        self.last_logged = 0.0

    def __call__(self, documents: int) -> None:
        now = time.monotonic()
        if self.first_batch_at is None:
            self.first_batch_at = self.last_logged = now
            self.first_batch_documents = documents
            return
        if now - self.last_logged >= PROGRESS_LOG_EVERY_SECONDS:
            self.last_logged = now
            # the rate since the first batch arrived: documents per second of reading, not of waiting to start
            elapsed = now - self.first_batch_at
            rate = (documents - self.first_batch_documents) / elapsed if elapsed > 0 else 0.0
            self.log.info(f"{self.label}: {documents:,} documents read ({rate:,.0f}/s)")
