"""Our dlt source for MongoDB: one resource per collection, read as raw BSON batches and handed to dlt as Arrow.

``mongodb_collection`` reads one collection with the options of one ``CollectionOptions`` (the YAML's collection
options, defaults included); ``mongodb`` groups several into a dlt source. The server gets the user filter and, for
an incremental collection, the cursor's conditions (``$gte`` the last value in each BSON type bracket, cursor.py)
sorted by the cursor, so a run reads only new documents, whatever their cursor's type. Without incremental the read
is sorted by ``_id`` so it is deterministic. A chunked read (``chunk_size``) stops once a chunk is full and goes on
where it stopped at the next extraction: from the positions of the cursor, or of its ``_id`` ranges (ranges.py).

Each server reply (``find_raw_batches``: the BSON bytes, not decoded) is converted to Arrow by ``bson_arrow``
(in worker processes once the read is long enough, workers.py), while this process keeps reading; the converted
batches come back in order, ``columns`` names their columns and the assembler turns them into dlt items. dlt
receives Arrow tables only: it extracts them to parquet without looking at a single row, and keeps schema,
state, write dispositions and destinations. Incremental state is the cursor module's, committed with the load.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import dlt
import pymongo
from dlt.common.exceptions import SignalReceivedException
from dlt.common.storages.exceptions import CurrentLoadPackageStateNotAvailable
from dlt.common.typing import TDataItems
from dlt.extract import DltResource

from mongodb_dlt.config import CollectionOptions
from mongodb_dlt.extract import mongo, ranges
from mongodb_dlt.extract.assembler import Assembler
from mongodb_dlt.extract.bson_arrow import ConversionSettings, ConvertedBatch
from mongodb_dlt.extract.columns import CollectionNames
from mongodb_dlt.extract.cursor import CursorState
from mongodb_dlt.extract.ranges import Snapshot
from mongodb_dlt.extract.workers import ConversionQueue
from mongodb_dlt.naming import root_table
from mongodb_dlt.results import ExtractStats

logger = logging.getLogger(__name__)

_PROMOTE_OPTIONS = "data_writer.arrow_concat_promote_options"


def conversion_settings(options: CollectionOptions) -> ConversionSettings:
    """What the converter needs to know of a collection's options."""
    cursor_field = options.incremental.cursor_field if options.incremental else None
    return ConversionSettings(
        max_table_nesting=options.max_table_nesting,
        json_paths=frozenset(tuple(path.split(".")) for path in options.json_paths),
        max_object_keys=options.max_object_keys,
        key_paths=tuple(tuple(key.split(".")) for key in options.primary_key or ("_id",)),
        cursor_path=tuple(cursor_field.split(".")) if cursor_field else None,
    )


def mongodb_collection(
    connection_url: str | None,
    database: str,
    collection: str,
    options: CollectionOptions | None = None,
    *,
    client: Any = None,
    stats: ExtractStats | None = None,
    conversion_processes: int | None = None,
    count_documents: bool = False,
    first_load: bool = False,
    nul_free_text: bool = False,
    stop: threading.Event | None = None,
    window: mongo.Window | None = None,
    chunked: bool = False,
    **option_values: Any,
) -> DltResource:
    """A dlt resource that reads one collection; nothing connects until dlt extracts it.

    ``options`` (or the same options as keyword arguments, ``write_disposition="append"``, validated the same
    way) are the YAML's collection options; what is not given takes the YAML's default. The resource is named
    ``table_name`` (default: the collection). ``client`` (pymongo, or mongomock in tests) is used instead of
    connecting to ``connection_url`` and is left open. ``stats`` is filled in while dlt extracts.
    ``conversion_processes`` caps the worker processes (0: convert in this process; default: all cores).
    ``count_documents`` counts the documents matching the read's query (same client, same query) just before
    and just after the read, into ``stats.count_before`` and ``stats.count_after``: the two ends of what a read
    racing with writers can have seen. A ``limit`` is not applied to the counts. ``first_load`` says the warehouse
    holds none of the collection's tables: a merge then writes no rows that clear old array elements.
    ``nul_free_text`` says the destination cannot store U+0000 in text (PostgreSQL): a document holding one in a
    string fails the read, named by its key and field, before anything loads. ``stop``, once set, ends the read
    before the next batch is converted, with dlt's ``SignalReceivedException`` (dlt's own shutdown exception,
    which nothing between here and the pipeline catches). ``window`` reads one partition of a partitioned
    collection: its documents only, every row tagged with its key, and marker rows that clear the window's old rows
    in every table (assembler.py); the documents in no window are counted into ``stats.outside_windows``.
    ``chunked`` (never with ``window``: a window is one package) reads one chunk (``chunk_size``) per
    extraction, its progress in the resource state committed with its rows: a collection read whole as ``_id``
    ranges (ranges.py), an incremental one along its cursor, whose state is its progress. ``stats.read_complete``
    then says whether the extraction read to the end.
    """
    label = f"{database}.{collection}"
    if client is None and connection_url is None:
        raise ValueError(f"{label}: give a connection_url or a client")
    if options is not None and option_values:
        raise ValueError(f"{label}: give options or keyword options, not both")
    if options is None:
        options = CollectionOptions.model_validate(option_values)
    if chunked and window is not None:
        raise ValueError(f"{label}: a partition's window is read in one package, not in chunks")
    cursor_field = options.incremental.cursor_field if options.incremental is not None else None
    key_fields = list(options.primary_key) or ["_id"]
    required_fields = ["_id", *key_fields] if cursor_field is None else ["_id", *key_fields, cursor_field]
    read_projection = mongo.projection(options.projection, dict.fromkeys(required_fields))
    sort = [(cursor_field or "_id", pymongo.ASCENDING)]
    settings = conversion_settings(options)
    resource_name = options.table_name or collection
    _allow_schema_growth()

    def read_collection() -> Iterator[TDataItems]:
        run_stats = stats if stats is not None else ExtractStats()
        run_settings = settings
        schema = dlt.current.source_schema()
        names = CollectionNames(root_table(resource_name), schema.tables)
        known_columns = names.known_columns()
        try:
            load_id: str | None = dlt.current.load_package_state()["load_id"]
        except CurrentLoadPackageStateNotAvailable:
            load_id = None  # iterated outside a pipeline: nothing is loaded, so nothing can need undoing
        partition = window.key if window is not None else None
        assembler = Assembler(
            names, options, run_stats, load_id, settings.cursor_path, first_load, nul_free_text, partition
        )
        cursor_state = CursorState.load(dlt.current.resource_state(), cursor_field, label) if cursor_field else None
        conversions = ConversionQueue(label, conversion_processes)

        client_used = client if client is not None else mongo.connect(connection_url)  # type: ignore[arg-type]
        resource_state = dlt.current.resource_state()
        snapshot: Snapshot | None = None
        run_stats.read_complete = True
        documents_before, bytes_before = run_stats.documents + run_stats.skipped_at_boundary, run_stats.bytes
        try:
            source = client_used[database][collection]
            cursor_conditions = []
            if cursor_state is not None:
                initial_value = options.incremental.initial_value if options.incremental else None
                cursor_conditions = cursor_state.conditions(
                    source, initial_value, merges=options.merges, key_paths=settings.key_paths
                )
            query = mongo.query(options.filter, cursor_field, cursor_conditions, window)
            tagged = {"comment": options.comment} if options.comment else {}
            if chunked and cursor_field is None:
                snapshot = _snapshot(resource_state, first_load, client_used)
                if count_documents and snapshot.count_before is None:
                    _count_into(run_stats, source, query, tagged, before=True)
                    snapshot.count_before = run_stats.count_before
                run_stats.count_before = snapshot.count_before
                reads = []
                for id_range in snapshot.ranges:
                    rest = id_range.rest()
                    if rest == []:
                        id_range.done = True  # it ended at MaxKey
                    elif not id_range.done:
                        reads.append((mongo.query(options.filter, "_id", rest or []), id_range))
            else:
                # a snapshot left by chunked runs, chunk_size since set to null (or the collection made replace or
                # given a limit): this read covers it, and a later chunked read starts a snapshot of its own
                resource_state.pop(ranges.STATE_KEY, None)
                if count_documents:
                    _count_into(run_stats, source, query, tagged, before=True)
                reads = [(query, None)]
            budget = _ChunkBudget(options) if chunked else None
            boundary = cursor_state.boundary() if cursor_state is not None else None
            for read_query, id_range in reads:
                logger.debug("%s: find %s sort %s", label, read_query, sort)
                raw_batches = mongo.raw_batches(
                    source,
                    read_query,
                    projection=read_projection,
                    sort=sort,
                    batch_size=options.batch_size,
                    limit=options.limit or 0,
                    # a cursor field without an index is sorted by the server; past 100 MB it needs the disk
                    allow_disk_use=cursor_field is not None or None,
                    **tagged,
                )
                try:
                    for raw in raw_batches:
                        if stop is not None and stop.is_set():
                            raise SignalReceivedException(signal.SIGTERM)
                        if not names.json_paths <= run_settings.json_paths:
                            run_settings = replace(run_settings, json_paths=run_settings.json_paths | names.json_paths)
                        conversions.put(raw, run_settings, boundary)
                        run_stats.bytes += len(raw)
                        if id_range is not None or budget is not None:
                            documents, last_id = ranges.batch_end(raw)
                            if id_range is not None:
                                id_range.last = last_id
                                id_range.documents += documents
                            if budget is not None and budget.spend(documents, len(raw)):
                                break  # the chunk is full: the next package reads on
                        for batch in conversions.take():
                            yield from assembler.items(batch)
                            _count_batch(run_stats, batch, cursor_state)
                    else:
                        if id_range is not None:
                            id_range.done = True
                        continue
                finally:
                    raw_batches.close()
                run_stats.read_complete = False
                break
            for batch in conversions.drain():
                yield from assembler.items(batch)
                _count_batch(run_stats, batch, cursor_state)
            assembler.clear_window()
            yield from assembler.flush()
            run_stats.batches_in_workers += conversions.in_workers
            if chunked and run_stats.estimated_documents is None:
                # for the progress lines: asked after the read, which it must never hold up
                run_stats.estimated_documents = mongo.estimated_count(source)
            if count_documents and run_stats.read_complete and run_stats.count_error is None:
                _count_into(run_stats, source, query, tagged, before=False)
            if window is not None:
                _count_outside(run_stats, source, options.filter, window, tagged)
        finally:
            if client is None:
                client_used.close()
        if cursor_state is not None:
            cursor_state.save()
        if snapshot is not None:
            snapshot.chunks += 1
            snapshot.documents += run_stats.documents + run_stats.skipped_at_boundary - documents_before
            snapshot.bytes += run_stats.bytes - bytes_before
            snapshot.save(resource_state)
            run_stats.snapshot = snapshot
        run_stats.columns = names.all_paths()
        run_stats.new_columns.extend(names.new_columns_since(known_columns, settings.json_paths))
        logger.debug("%s: done, %d documents", label, run_stats.documents)

    return dlt.resource(  # type: ignore[call-overload, no-any-return]
        read_collection,
        name=resource_name,
        write_disposition=options.write_disposition,
        max_table_nesting=options.max_table_nesting,
        schema_contract=options.schema_contract,
    )


class _ChunkBudget:
    """What one chunk may read (``chunk_size``: documents or BSON bytes) and what it has read."""

    def __init__(self, options: CollectionOptions) -> None:
        self.max_documents = options.chunk_documents
        self.max_bytes = options.chunk_bytes
        self.documents = 0
        self.bytes = 0

    def spend(self, documents: int, size: int) -> bool:
        """Counts a batch read; True once the chunk is full."""
        self.documents += documents
        self.bytes += size
        if self.max_documents is not None and self.documents >= self.max_documents:
            return True
        return self.max_bytes is not None and self.bytes >= self.max_bytes


def _snapshot(resource_state: dict[str, Any], first_load: bool, client: Any) -> Snapshot:
    """The snapshot in progress in the resource's state, or a new one."""
    kept = resource_state.get(ranges.STATE_KEY)
    if kept is not None:
        return Snapshot.from_state(kept)
    return Snapshot.start(first_load, ranges.operation_time(client))


def _count_into(
    stats: ExtractStats, source: Any, query: dict[str, Any], options: dict[str, Any], *, before: bool
) -> None:
    counted = mongo.count(source, query, **options)
    if isinstance(counted, str):
        stats.count_error = counted
    elif before:
        stats.count_before = counted
    else:
        stats.count_after = counted


def _count_outside(
    stats: ExtractStats, source: Any, user_filter: dict[str, Any], window: mongo.Window, options: dict[str, Any]
) -> None:
    """The documents of the filter that no window holds: one count on the server, never a scan here."""
    outside = {"$and": [user_filter, window.outside()]} if user_filter else window.outside()
    counted = mongo.count(source, outside, **options)
    stats.partition = window.key
    if isinstance(counted, str):
        stats.outside_windows_error = counted
    else:
        stats.outside_windows = counted


def _count_batch(stats: ExtractStats, batch: ConvertedBatch, cursor_state: CursorState | None) -> None:
    stats.batches += 1
    stats.documents += batch.documents
    stats.skipped_at_boundary += batch.skipped
    if cursor_state is not None:
        cursor_state.advance(batch)
    if stats.on_progress is not None:
        stats.on_progress(stats.documents)


class _ExpectedHintOverride(logging.Filter):
    """Drops dlt's warning that column hints override the Arrow types: ours do on purpose (a ``json`` column
    arrives as Arrow text), once per batch, which would bury every other line of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in record.getMessage()


_HINT_OVERRIDE_FILTER = _ExpectedHintOverride()


def _allow_schema_growth() -> None:
    """Lets dlt buffer Arrow tables of one table whose columns grow from batch to batch (a new field, a new
    variant). dlt's "default" promotion only adds the missing columns as nulls; a column's type never changes
    here, since each (path, type) pair has a column of its own. A value the user configured is kept."""
    try:
        configured = dlt.config[_PROMOTE_OPTIONS]
    except KeyError:
        configured = None
    if configured is None:
        dlt.config[_PROMOTE_OPTIONS] = "default"
    logging.getLogger("dlt").addFilter(_HINT_OVERRIDE_FILTER)


@dlt.source(name="mongodb")
def mongodb(
    connection_url: str | None,
    database: str,
    collections: Sequence[str] | None = None,
    **options: Any,
) -> Iterator[DltResource]:
    """A dlt source with one ``mongodb_collection`` resource per collection, all given the same ``options``.
    ``collections=None`` reads every non-system collection, listed from the server when the source is made."""
    if collections is None:
        client = options.get("client")
        client_used = client if client is not None else mongo.connect(connection_url)  # type: ignore[arg-type]
        try:
            collections = sorted(
                name for name in client_used[database].list_collection_names() if not name.startswith("system.")
            )
        finally:
            if client is None:
                client_used.close()
    for collection in collections:
        yield mongodb_collection(connection_url, database, collection, **options)
