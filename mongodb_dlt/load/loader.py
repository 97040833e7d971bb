"""The Dagster resource that loads one collection through one dlt pipeline into the configured destination.

Each collection has its own pipeline (``mongodb_dlt__<database>__<collection>``), so its incremental state and
its failures never touch a sibling's. Every pipeline of a database writes into that database's dataset. A load:

1. takes the collection's lock (locking.py): one writer per collection, released when its process dies;
2. opens the warehouse (waiting while another process holds a DuckDB file, destination.py), restores state and
   schema from it into an emptied working folder, and undoes any load the warehouse never recorded as complete
   (warehouse.py);
3. extracts and normalizes with the warehouse closed, so analysts can query meanwhile;
4. opens the warehouse again and loads (and, for the ``rows_match_source`` check, counts the rows it holds). A load
   that fails has its rows undone at once and is never replayed.

Transient MongoDB errors are retried with exponential backoff; any other failure is returned in the result, never
raised, so sibling collections keep loading. A ``LoadStop`` ends loads early (a terminated run): each stops at its
next safe point (between two batches of its read, before normalizing, before its load starts) with nothing
written, and commits only when its caller lets it (``LoadStop.commits_allowed``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dlt
import duckdb
from dlt.common.destination import Destination
from dlt.common.pipeline import ExtractInfo
from dlt.common.schema import Schema
from dlt.common.schema.typing import MERGE_DISPOSITION_HINTS
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.pipeline.helpers import retry_schema_update

from mongodb_dlt.config import CollectionConfig, DestinationConfig, resolve_connection_url
from mongodb_dlt.errors import describe_error, disk_full, is_transient
from mongodb_dlt.extract import ranges
from mongodb_dlt.extract.cursor import display_cursor, last_value
from mongodb_dlt.extract.mongo import Window
from mongodb_dlt.extract.source import mongodb_collection
from mongodb_dlt.load import warehouse
from mongodb_dlt.load.destination import LoadDestination
from mongodb_dlt.load.locking import collection_lock
from mongodb_dlt.load.progress import ChunkLogger, ProgressLogger
from mongodb_dlt.load.stopping import LoadStop, LoadStopped
from mongodb_dlt.naming import SCHEMA_PREFIX, partition_lock_name, pipeline_name, root_table
from mongodb_dlt.results import CollectionLoadResult, ExtractStats, RowCounts

SCHEMA_RACE_ATTEMPTS = 5
"""Loads of a dataset's collections may run at once (PostgreSQL: other threads, steps and runs) and race to create
the dataset or a shared ``_dlt_*`` table; the loser's schema update fails before any of its rows is sent. dlt's
advice, and what the loader does: load again (dlt then applies only what is still missing), this many times."""

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


def _import_lazy_modules(destination: LoadDestination) -> None:
    if _imports_ready.is_set():
        return
    with _imports_lock:
        if not _imports_ready.is_set():
            for module in LAZILY_IMPORTED_BY_DLT:
                importlib.import_module(module)
            _ = destination.dlt_destination().client_class  # imports the destination's client module
            _imports_ready.set()


def _empty_staging_after_loads() -> None:
    """Merge loads go through ``<dataset>_staging``, which dlt would leave holding a copy of the last load of every
    merge collection: have dlt truncate it after each load instead. A value the user configured is kept."""
    try:
        configured = dlt.config[_TRUNCATE_STAGING]
    except KeyError:
        configured = None
    if configured is None:
        dlt.config[_TRUNCATE_STAGING] = True


class MongoDltLoader:
    """The Dagster resource (``build_definitions`` binds it) that runs one collection through its own dlt pipeline
    into ``destination``."""

    def __init__(self, destination: LoadDestination) -> None:
        self.destination = destination

    @classmethod
    def from_config(
        cls, destination: DestinationConfig, pipelines_dir: str | None = None, base: Path | None = None
    ) -> MongoDltLoader:
        """A loader for the YAML's ``destination``, relative paths resolved against ``base`` (default: the working
        directory)."""
        return cls(LoadDestination.from_config(destination, pipelines_dir, base))

    def pipeline(
        self,
        collection: CollectionConfig,
        dataset_name: str,
        destination: Destination[Any, Any],
        window: Window | None = None,
    ) -> dlt.Pipeline:
        """The collection's pipeline with its state and schema as the warehouse holds them, after undoing any
        load the warehouse never recorded as complete. The local working folder is dropped first: it is scratch
        space, and state from one warehouse or an older run must never drive a load. A partition (``window``) works
        in a folder of its own, undoes only its own window's rows, and starts from every table and column any
        version of the schema holds (``_union_stored_schemas``)."""
        name = pipeline_name(collection.database, collection.asset_name)
        working_dir = self.destination.working_dir
        if window is not None:
            working_dir = working_dir / partition_lock_name(name, window.key)
        shutil.rmtree(working_dir / name, ignore_errors=True)  # what Pipeline.drop() removes
        pipeline = dlt.pipeline(pipeline_name=name, pipelines_dir=str(working_dir), dataset_name=dataset_name)
        pipeline.sync_destination(destination=destination, dataset_name=dataset_name)
        if window is not None:
            _union_stored_schemas(pipeline)
        undone = warehouse.rollback_incomplete_loads(pipeline, window.key if window is not None else None)
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
        stop: LoadStop | None = None,
        window: Window | None = None,
    ) -> CollectionLoadResult:
        """Load one collection, retrying transient errors with exponential backoff. Never raises for a
        failure of the collection itself: the error is in the result so siblings keep going. ``count_rows`` also
        takes the counts of ``RowCounts``: MongoDB's just before and after the read, for a collection read whole, and
        the warehouse's right after the load. ``stop`` ends the load early (see ``LoadStop``): its result then says
        it was stopped, and no retry follows. ``window`` loads one partition of a partitioned collection: its
        window's rows replace the ones it held."""
        log = log or logging.getLogger(__name__)
        _import_lazy_modules(self.destination)
        _empty_staging_after_loads()
        started = time.monotonic()
        attempts = collection.retries.max_attempts
        attempt = 1
        committed: list[str] = []  # the load ids of the chunks committed by this run, over its attempts
        while True:
            if stop is not None and stop.requested.is_set():
                return _stopped(collection, dataset_name, started, attempt, log, committed)
            try:
                result = self._load_once(collection, dataset_name, log, run_id, count_rows, stop, committed, window)
            except Exception as error:
                stopping = stop is not None and stop.requested.is_set()
                if stop is not None:
                    if stopping and not stop.committing(collection.name):
                        return _stopped(collection, dataset_name, started, attempt, log, committed)
                    stop.release(collection.name)
                message = describe_error(error)
                if disk_full(error) is not None:
                    # A write's ENOSPC names no file: say where this load writes.
                    places = ", ".join(self.destination.local_paths)
                    message += f" (this load writes to {places}: free space there, then run again)"
                if committed:
                    message += (f" ({len(committed)} chunk(s) of its read committed before: the next run reads on "
                                "from there)")
                if attempt >= attempts or not is_transient(error) or stopping:
                    log.error(f"{collection.database}.{collection.name}: failed after {attempt} attempt(s): {message}")
                    return _unloaded(collection, dataset_name, started, attempt, message)
                delay = collection.retries.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    f"{collection.database}.{collection.name}: attempt {attempt}/{attempts} failed"
                    f" with a transient error ({message}); retrying in {delay:g}s"
                )
                if stop is not None:
                    stop.requested.wait(delay)  # the loop's first check ends a load stopped meanwhile
                else:
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
        stop: LoadStop | None,
        committed: list[str],
        window: Window | None = None,
    ) -> CollectionLoadResult:
        label = f"{collection.database}.{collection.name}"
        lock_name = pipeline_name(collection.database, collection.asset_name)
        if window is not None:
            # one writer per partition: the partitions of a collection read, convert and normalize at once
            label, lock_name = f"{label} partition {window.key}", partition_lock_name(lock_name, window.key)
        with collection_lock(self.destination.working_dir / f"{lock_name}.lock", label, run_id):
            # Finds out before the extract whether the warehouse can be written, and undoes a load that died.
            with self.destination.session(log) as destination:
                pipeline = self.pipeline(collection, dataset_name, destination, window)
                first_load = (
                    collection.merges
                    and window is None
                    and self.destination.appends_first_loads
                    and warehouse.holds_no_tables_of(pipeline, root_table(collection.table_name))
                )
            return self._extract_and_load(
                pipeline, collection, dataset_name, log, count_rows, first_load, stop, committed, window
            )

    def _extract_and_load(
        self,
        pipeline: dlt.Pipeline,
        collection: CollectionConfig,
        dataset_name: str,
        log: logging.Logger,
        count_rows: bool,
        first_load: bool,
        stop: LoadStop | None,
        committed: list[str],
        window: Window | None = None,
    ) -> CollectionLoadResult:
        """The read, in one package, or for a chunked collection in one package per chunk, each committed with its
        progress (the loop below; ranges.py): a kill loses at most the chunk in flight, and a stop between two
        chunks ends the load with those committed kept (``LoadStopped``, not reported: the next run reads on)."""
        label = f"{collection.database}.{collection.name}"
        table = root_table(collection.table_name)
        cursor_field = collection.incremental.cursor_field if collection.incremental else None
        cursor_before = last_value(pipeline.state, collection.table_name, cursor_field) if cursor_field else None
        stats = ExtractStats(on_progress=ProgressLogger(label, log))
        chunked = collection.chunked and window is None  # a partition's window is one package
        resumed = ranges.in_progress(pipeline.state, collection.table_name) if chunked and not cursor_field else None
        if resumed is not None:
            first_load = resumed.first_load  # its chunks so far appended, and hold none of the rest
            log.info(f"{label}: resuming the snapshot started {resumed.started_at}: {resumed.documents:,} documents "
                     f"in {resumed.chunks} chunk(s) committed")
        chunk_log = ChunkLogger(label, log, stats, cursor_before is None)
        load_ids: list[str] = []
        schema_update: dict[str, Any] = {}
        while True:
            load_info, counts = self._load_chunk(
                pipeline, collection, dataset_name, log, stats, first_load, stop, chunked, count_rows, load_ids, window
            )
            load_ids.extend(load_info.loads_ids)
            for package in load_info.load_packages:
                schema_update.update(package.schema_update)
            if not chunked:
                break
            committed.extend(load_info.loads_ids)
            chunk_log.committed()
            if stats.read_complete:
                break
            if cursor_field is not None:
                first_load = False  # the next chunk may meet a document of this one again (updated meanwhile)
            if stop is not None and stop.requested.is_set():
                raise LoadStopped(f"{label}: stopped between two chunks")

        if counts is not None:
            counts = replace(counts, source_before=stats.count_before, source_after=stats.count_after)
            if stats.count_error is not None and counts.error is None:
                counts = replace(
                    counts, error=f"MongoDB could not count the collection's documents: {stats.count_error}"
                )
        incremental = collection.incremental
        return CollectionLoadResult(
            database=collection.database,
            collection=collection.name,
            dataset_name=dataset_name,
            table_name=table,
            read=stats,
            columns=_table_columns(pipeline.default_schema, table),
            row_counts=counts,
            schema_changes=_schema_changes(schema_update),
            cursor_field=cursor_field,
            cursor_before=cursor_before,
            cursor_initial_value=display_cursor(incremental.initial_value) if incremental else None,
            cursor_after=last_value(pipeline.state, collection.table_name, cursor_field) if cursor_field else None,
            load_ids=load_ids,
            chunks=chunk_log.chunks,
        )

    def _partitions_take_turns(
        self, collection: CollectionConfig, window: Window | None, log: logging.Logger
    ) -> contextlib.AbstractContextManager[None]:
        """A partition's load step waits for the collection's lock: dlt stages a merge in one staging table per
        table and empties it when a load starts, so two partitions of one collection loading at once would merge
        each other's rows. Their reads, conversion and normalize (most of the time) run at once."""
        if window is None:
            return contextlib.nullcontext()
        label = f"{collection.database}.{collection.name}"
        lock_name = pipeline_name(collection.database, collection.asset_name)
        log.debug(f"{label} partition {window.key}: waiting for the collection's load step")
        return collection_lock(self.destination.working_dir / f"{lock_name}.lock", label, wait=True)

    def _load_chunk(
        self,
        pipeline: dlt.Pipeline,
        collection: CollectionConfig,
        dataset_name: str,
        log: logging.Logger,
        stats: ExtractStats,
        first_load: bool,
        stop: LoadStop | None,
        chunked: bool,
        count_rows: bool,
        load_ids: list[str],
        window: Window | None,
    ) -> tuple[Any, RowCounts | None]:
        """Extracts, normalizes and loads one package: the whole read, one chunk of it, or a partition's window.
        Returns dlt's load info and, after the read's last package, the counts for ``rows_match_source``."""
        label = f"{collection.database}.{collection.name}"
        table = root_table(collection.table_name)
        resource = mongodb_collection(
            resolve_connection_url(collection),
            collection.database,
            collection.name,
            collection,
            stats=stats,
            count_documents=count_rows and collection.reads_whole_collection,
            first_load=first_load,
            nul_free_text=not self.destination.stores_nul_in_text,
            stop=stop.requested if stop is not None else None,
            chunked=chunked,
            window=window,
        )
        # a failed or stopped extract leaves nothing in the warehouse; the next run drops its package with the folder
        extract_info = pipeline.extract(resource, loader_file_format=self.destination.file_format)  # type: ignore[arg-type]
        if stop is not None and stop.requested.is_set():
            raise LoadStopped(f"{label}: stopped before normalizing")
        last = stats.read_complete
        try:
            met_once = (
                collection.merges and window is None and self._declare_deduplicated(pipeline, extract_info, table, log)
            )
            if first_load and met_once:
                _append_first_load(pipeline, resource.name)
            pipeline.normalize()
            with self._partitions_take_turns(collection, window, log), self.destination.session(log) as destination:
                if stop is not None and last:
                    stop.admit(collection.name)  # the read's last package is the load's result
                elif stop is not None:
                    stop.admit_chunk(collection.name)  # a chunk before it is progress, reported by none
                load_info = _load_through_schema_races(pipeline, destination, label, log)
                if not met_once:  # a read that met no document twice left no older version behind
                    _remove_superseded_children(pipeline, collection, log)
                counts = (
                    warehouse.count_rows(
                        pipeline, table, [*load_ids, *load_info.loads_ids], collection.reads_whole_collection
                    )
                    if count_rows and last
                    else None
                )
            if stop is not None and not last:
                stop.release(collection.name)
        except LoadStopped:
            raise  # nothing was sent to the warehouse
        except Exception:
            # A package that failed is never replayed, and its rows leave the warehouse now rather than at the
            # next run: the next run reads the collection again from the state the warehouse holds.
            try:
                with self.destination.session(log) as destination:
                    self.pipeline(collection, dataset_name, destination, window)
            except Exception as cleanup_error:
                log.warning(f"{label}: the failed load's rows stay until the next run removes them "
                            f"({describe_error(cleanup_error)})")
            raise
        return load_info, counts

    def _declare_deduplicated(
        self, pipeline: dlt.Pipeline, extract_info: ExtractInfo, table_name: str, log: logging.Logger
    ) -> bool:
        """Tells dlt's merge whether the extracted root rows hold each document once, as they do unless the read met
        a document twice: dlt then inserts them as they are instead of numbering every staging row per key to keep
        one (a window over the whole table, most of a first load's SQL). Decided afresh for every package from the
        rows themselves, never carried over; when in doubt dlt deduplicates. True when every document came once."""
        table = pipeline.default_schema.tables.get(table_name)
        if table is None:
            return True  # no documents: nothing to merge
        files = [
            job.file_path
            for package in extract_info.load_packages
            for job in package.jobs.get("new_jobs", [])
            if job.job_file_info.table_name == table_name
        ]
        logging.getLogger("dlt").addFilter(_STORAGE_SCHEMA_USED)
        unique = False
        if files and all(file.endswith(".parquet") for file in files):
            temp_directory = str(Path(pipeline.working_dir) / "duckdb_tmp")
            try:
                unique = not warehouse.keys_repeat(files, self.destination.duckdb_config(), temp_directory)
            except duckdb.Error as error:
                log.debug(f"{table_name}: could not count repeated document keys ({error}); dlt deduplicates")
        table[DEDUPLICATED_HINT] = unique  # type: ignore[literal-required]
        return unique


def _stopped(
    collection: CollectionConfig,
    dataset_name: str,
    started: float,
    attempt: int,
    log: logging.Logger,
    committed: list[str],
) -> CollectionLoadResult:
    message = "stopped before its load started (the run was terminated): it wrote nothing"
    if committed:
        message = (f"stopped between two chunks of its read (the run was terminated): the {len(committed)} chunk(s) "
                   "committed stay, and the next run reads on from there")
    log.warning(f"{collection.database}.{collection.name}: {message}")
    return _unloaded(collection, dataset_name, started, attempt, message)


def _unloaded(
    collection: CollectionConfig, dataset_name: str, started: float, attempt: int, message: str
) -> CollectionLoadResult:
    """The result of a load that failed or was stopped: ``message`` says why."""
    return CollectionLoadResult(
        database=collection.database,
        collection=collection.name,
        dataset_name=dataset_name,
        table_name=collection.table_name,
        duration_seconds=time.monotonic() - started,
        attempts=attempt,
        error=message,
    )


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


class _StorageSchemaUsed(logging.Filter):
    """Drops dlt's warning that normalize used the pipeline's schema rather than the one saved with the extracted
    package, for our pipelines: ``_declare_deduplicated`` sets a hint between the two steps for that purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return f" with schema {SCHEMA_PREFIX}" not in message or "from extract package schema hash" not in message


_STORAGE_SCHEMA_USED = _StorageSchemaUsed()


def _append_first_load(pipeline: dlt.Pipeline, resource_name: str) -> None:
    """A merge collection's first load, whose documents each came once, goes in by dlt's append: nothing in the
    warehouse to merge with, so no staging copy and no merge statements. The next extract sets merge again (the
    source's hints), and that load merges into what this one appended."""
    for table in pipeline.default_schema.data_tables():
        if table.get("resource") == resource_name:
            table["write_disposition"] = "append"
            for column in table["columns"].values():
                column.pop("hard_delete", None)  # merge-only: dlt would warn that append ignores it


def _union_stored_schemas(pipeline: dlt.Pipeline) -> None:
    """Adds to the pipeline's schema every table and column that an older stored version has and the newest lacks.
    Partitions of one collection load at once, each from the schema version it started with: the newest version
    is then one partition's, and only all of them together name every child table (whose window rows a partition
    must clear) and every column (whose name a new variant must not take). A column two versions type differently
    keeps the newest's type."""
    if pipeline.default_schema_name is None:
        return  # nothing stored yet
    schema = pipeline.default_schema
    for stored in warehouse.stored_schemas(pipeline)[1:]:
        for name, table in stored.get("tables", {}).items():
            if name.startswith("_dlt"):
                continue
            known = schema.tables.get(name)
            if known is None:
                schema.tables[name] = table
                continue
            for column_name, column in table.get("columns", {}).items():
                known["columns"].setdefault(column_name, column)


def _remove_superseded_children(pipeline: dlt.Pipeline, collection: CollectionConfig, log: logging.Logger) -> None:
    """After a merge load (and before the next, should the process have died in between): the array elements of
    a document's older version, when the read met the document twice (warehouse.remove_superseded_children). A
    failure here is logged, not raised: the load is complete, and the next load tries again. A partitioned
    collection reads each window in ``_id`` order, meets no document twice and clears whole windows."""
    if not collection.merges or collection.partitions is not None:
        return
    label = f"{collection.database}.{collection.name}"
    try:
        removed = warehouse.remove_superseded_children(pipeline)
    except Exception as error:
        log.warning(f"{label}: could not check for an older version's array elements ({describe_error(error)}); "
                    "the next load checks again")
        return
    if removed:
        log.info(f"{label}: documents met twice by the read (updated while it ran) keep their newest version; "
                 "removed the older version's array elements: "
                 + ", ".join(f"{table}: {rows}" for table, rows in removed.items()))


def _load_through_schema_races(
    pipeline: dlt.Pipeline, destination: Destination[Any, Any], label: str, log: logging.Logger
) -> Any:
    """``pipeline.load``, again while its schema update loses a race with another load of the dataset."""
    races = retry_schema_update()
    for attempt in range(1, SCHEMA_RACE_ATTEMPTS):
        try:
            return pipeline.load(destination=destination)
        except PipelineStepFailed as error:
            if not races(error):
                raise
            log.info(f"{label}: the dataset's tables changed under this load ({describe_error(error)[:200]}); "
                     f"loading again (attempt {attempt + 1} of {SCHEMA_RACE_ATTEMPTS})")
    return pipeline.load(destination=destination)
