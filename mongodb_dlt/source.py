"""Our dlt source for MongoDB: one resource per collection, read as raw BSON batches and handed to dlt as Arrow.

``mongodb_collection`` reads one collection; ``mongodb`` groups several into a dlt source. The server gets the
user filter and, for an incremental collection, ``{cursor: {"$gte": last_value}}`` sorted by the cursor, so a
run reads only new documents. Without incremental the read is sorted by ``_id`` so it is deterministic.

Each server reply (``find_raw_batches``: the BSON bytes, not decoded) is converted to Arrow by
``bson_arrow`` in worker processes, while this process keeps reading; the converted batches come back in order
and ``columns`` names their columns. dlt receives Arrow tables only: it extracts them to parquet without looking
at a single row, and keeps schema, state, write dispositions and destinations. At most a few batches are in
flight, so memory stays bounded whatever the collection's size.

Tables:
- the root table (the collection), with ``_mongo_key``: the typed identity of the primary key (``_id`` by
  default). Merge upserts on it, so ``1`` and ``"1"`` are two documents and a null ``_id`` is a document too.
- one child table per array path (``<table>__<field>``), linked by ``_dlt_parent_id`` / ``_dlt_root_id`` to
  the parent's and root's ``_dlt_id``, with ``_dlt_list_idx`` and ``_mongo_root_key`` (the document's key).
  Under merge a document's child rows are replaced as a whole (merge key ``_mongo_root_key``): a document
  whose array shrank, emptied or vanished sends one marker row (``_mongo_deleted``) that clears its old rows.

Incremental state lives in dlt's resource state and is committed with the load: the last cursor value (as
canonical Extended JSON, so its BSON type survives) and the keys of the documents at that value, which the
next run skips because ``$gte`` returns them again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.util
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import bson
import dlt
import pyarrow as pa
import pyarrow.compute as pc
import pymongo
from bson import ObjectId, json_util
from bson.codec_options import CodecOptions
from dlt.common.storages.exceptions import CurrentLoadPackageStateNotAvailable
from dlt.common.typing import TDataItems
from dlt.extract import DltResource
from dlt.extract.hints import make_hints
from pymongo.collection import Collection

from mongodb_dlt.bson_arrow import (
    CODEC_OPTIONS,
    JSON_TAG,
    ConversionSettings,
    ConvertedBatch,
    ConvertedTable,
    DocumentConversionError,
    FieldPath,
    TablePath,
    convert_raw_batch,
    extended_json,
    identity,
    random_row_ids,
)
from mongodb_dlt.columns import (
    DELETED,
    DOCUMENT_KEY,
    LIST_INDEX,
    LOAD_ID,
    PARENT_ID,
    ROOT_ID,
    ROOT_KEY,
    ROW_ID,
    TABLE_HINT,
    CollectionNames,
    TableNames,
    display_path,
    flat_path,
)
from mongodb_dlt.config import mask_secrets, mask_url

logger = logging.getLogger(__name__)

DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000
"""How long pymongo looks for a usable server before failing, unless the connection URL sets its own."""

CONVERSION_PROCESSES = max(1, min(2, os.cpu_count() or 1))
"""Worker processes converting BSON to Arrow, shared by every collection loading in this process."""

_DISPLAY_DATES: CodecOptions[Any] = CodecOptions(tz_aware=True, tzinfo=UTC)
_PROMOTE_OPTIONS = "data_writer.arrow_concat_promote_options"

BATCHES_IN_FLIGHT_PER_PROCESS = 2
"""Batches sent ahead to each conversion process: keeps them busy while memory stays bounded."""
BATCHES_BEFORE_WORKERS = 4
"""Batches a collection converts in this process before it starts the worker pool: starting workers costs about a
second of CPU per worker, which a small (incremental) read never earns back."""
ITEM_BYTES = 16 * 1024 * 1024
"""Arrow bytes gathered before they go to dlt as one item per table (see ``_Assembler.items``)."""

_HEX_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
# cursor values kept in the state decode to exactly the types the converter sees (DatetimeMS, Binary)
_CURSOR_JSON = json_util.CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=CODEC_OPTIONS.datetime_conversion, uuid_representation=CODEC_OPTIONS.uuid_representation
)

# nullable: tables written before the column existed get it added with NULL in their (complete) rows
_LOAD_ID_COLUMN = {"name": LOAD_ID, "data_type": "text", "nullable": True}
_ROW_ID_COLUMN = {"name": ROW_ID, "data_type": "text", "nullable": False, "row_key": True, "unique": True}
_CHILD_LINK_COLUMNS = {
    ROW_ID: {"name": ROW_ID, "data_type": "text", "nullable": True, "row_key": True},
    PARENT_ID: {"name": PARENT_ID, "data_type": "text", "nullable": True},
    ROOT_ID: {"name": ROOT_ID, "data_type": "text", "nullable": True},
    LIST_INDEX: {"name": LIST_INDEX, "data_type": "bigint", "nullable": True},
}


class IncrementalSettings(Protocol):
    """What the source needs from an incremental setting (config.IncrementalConfig fits)."""

    cursor_field: str
    initial_value: Any


@dataclass(frozen=True)
class NewColumn:
    """A column an extraction named for the first time: the schema it started from did not have it."""

    table: str
    column: str
    path: str
    """Where its values sit in a document (``display_path``): ``customer.address.zip``, ``items[].sku``."""
    type: str
    """The type tag of its values (``string``, ``int64``, ``json``, ...)."""
    plain_column: str
    """The column of the path's first type: the column itself, unless this is a variant."""
    plain_type: str
    configured_json: bool = False
    """A JSON column because ``json_paths`` asks for one, not as a fallback."""
    flattened_before: tuple[str, ...] = ()
    """A JSON column: the columns its sub-document was flattened into before (earlier loads or batches)."""

    @property
    def variant(self) -> bool:
        """Holds another type than the path's first: the path's type drifted."""
        return self.column != self.plain_column

    @property
    def json_fallback(self) -> bool:
        """A field stored whole as JSON that ``json_paths`` did not ask for: deeper than ``max_table_nesting``, a
        data-keyed map, or a path that became JSON earlier."""
        return self.type == JSON_TAG and not self.configured_json and not self.variant


@dataclass
class ExtractStats:
    """What one extraction read and wrote, filled in as it goes: rows exclude merge's marker rows."""

    documents: int = 0
    """Documents converted: those skipped at the incremental boundary are not counted."""
    skipped_at_boundary: int = 0
    batches: int = 0
    batches_in_workers: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """Table -> column -> MongoDB path and type, for every column the collection has."""
    new_columns: list[NewColumn] = field(default_factory=list)
    """Columns this extraction added: new fields, variants of drifted types, paths stored as JSON."""
    count_before: int | None = None
    """Documents matching the read's query just before the read (``count_documents=True`` only)."""
    count_after: int | None = None
    """The same count just after the read."""
    count_error: str | None = None
    """Why the server refused to count (a filter ``count_documents`` does not take, such as ``$where``)."""
    on_progress: Callable[[int], None] | None = None

    def add_rows(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows


def _uri_sets(connection_url: str, option: str) -> bool:
    query = connection_url.partition("?")[2].lower()
    return any(part.partition("=")[0] == option.lower() for part in re.split(r"[&;]", query))


def connect(connection_url: str) -> pymongo.MongoClient:
    """A pymongo client with our defaults (server selection timeout, app name); the URL's own options win.
    Decoding options do not matter: documents are read as raw BSON and decoded by ``bson_arrow``."""
    defaults = {
        "uuidRepresentation": "standard",
        "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
        "appname": "mongodb-dlt",
    }
    options = {key: value for key, value in defaults.items() if not _uri_sets(connection_url, key)}
    return pymongo.MongoClient(connection_url, tz_aware=True, **options)


class MongoUnreachableError(Exception):
    """The server of a connection URL cannot be used at all (refused, unknown host, timed out, bad URL, failed
    authentication). ``str()`` is one line, password masked: ``cannot reach MongoDB at <url>: <cause>``, with
    ``(after N s)`` when it waited for a server."""


# pymongo appends the whole topology (every server, every error again) and its timeout settings to a server
# selection error: only the first part says why, the rest repeats it at length.
_SELECTION_NOISE = re.compile(r",\s*Timeout:|,?\s*Topology Description:")
_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts:[^)]*\)")
# OperationFailure appends the server's whole reply document
_FULL_ERROR = re.compile(r",\s*full error:")


def _unreachable_cause(error: pymongo.errors.PyMongoError) -> str:
    """The short reason of ``error`` on one line, secrets masked."""
    text = str(error)
    if isinstance(error, pymongo.errors.ServerSelectionTimeoutError):
        text = _SELECTION_NOISE.split(text, maxsplit=1)[0]
        text = _CONFIGURED_TIMEOUTS.sub("", text)
        # several servers are listed as "a: why,b: why"
        text = re.sub(r",(?=\S)", ", ", text)
    else:
        text = _FULL_ERROR.split(text, maxsplit=1)[0]
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return mask_secrets(" ".join(text.split()))


def check_reachable(connection_url: str) -> None:
    """Ping the server of ``connection_url`` once, so that a wrong host, port or password fails in one server
    selection timeout (10 s unless the URL sets its own) instead of once per collection with retries.

    Raises ``MongoUnreachableError`` with a one-line message that never holds the password."""
    started = time.monotonic()
    client: pymongo.MongoClient | None = None
    try:
        client = connect(connection_url)
        client.admin.command("ping")
    except (
        pymongo.errors.ConnectionFailure,
        pymongo.errors.ConfigurationError,
        pymongo.errors.OperationFailure,
    ) as error:
        message = f"cannot reach MongoDB at {mask_url(connection_url)}: {_unreachable_cause(error)}"
        if isinstance(error, pymongo.errors.ConnectionFailure):
            # a connection failure usually means waiting out the whole server selection timeout: say how long
            waited = time.monotonic() - started
            message += f" (after {waited:.0f} s)" if waited >= 1 else f" (after {waited:.1f} s)"
        # from None: the chained pymongo error would bring the topology dump back into tracebacks
        raise MongoUnreachableError(mask_secrets(message)) from None
    finally:
        if client is not None:
            client.close()


def _projection(
    projection: Sequence[str] | Mapping[str, Any] | None, required: Iterable[str]
) -> dict[str, Any] | None:
    if projection is None:
        return None
    if isinstance(projection, Mapping):
        return dict(projection)
    fields = list(projection)
    for field_name in required:
        # MongoDB rejects projecting both a field and its parent or child ("path collision")
        if not any(field_name == f or field_name.startswith(f"{f}.") or f.startswith(f"{field_name}.") for f in fields):
            fields.append(field_name)
    return dict.fromkeys(fields, 1)


def _query(user_filter: Mapping[str, Any] | None, cursor_field: str | None, start: Any) -> dict[str, Any]:
    query = dict(user_filter or {})
    if cursor_field is None:
        return query
    # documents without the cursor (or with null) could never be read incrementally later: never read them
    condition = {cursor_field: {"$ne": None} if start is None else {"$gte": start}}
    return {"$and": [query, condition]} if query else condition


def _initial_server_value(value: Any, collection: Collection, cursor_field: str) -> Any:
    """A configured ``initial_value`` as the BSON value the server compares with."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and _HEX_OBJECT_ID.fullmatch(value):
        # the same 24 hex digits may be an ObjectId or a string: the server's type order matches only one
        holds_object_ids = collection.find_one({cursor_field: {"$type": "objectId"}}, projection={"_id": 1})
        if holds_object_ids is not None:
            return ObjectId(value)
    return value


def display_cursor(value: Any) -> Any:
    """A cursor value as metadata shows it: dates as ISO-8601 UTC, ObjectIds as hex, else as the value is."""
    if isinstance(value, bson.datetime_ms.DatetimeMS):
        try:
            return value.as_datetime(_DISPLAY_DATES).isoformat()
        except (OverflowError, ValueError):
            return extended_json(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, (ObjectId, bson.decimal128.Decimal128)):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return extended_json(value)


# -- conversion in worker processes ----------------------------------------------------------------------------

_pool: ProcessPoolExecutor | None = None
_warm_up: Future[int] | None = None
"""A no-op task sent first: it is done once a worker has started and answers."""
_pool_lock = threading.Lock()


def _conversion_pool() -> ProcessPoolExecutor:
    """The process-wide pool of conversion workers, started on first use (spawned: the caller has threads)."""
    global _pool, _warm_up
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(CONVERSION_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
            # A process that is itself a multiprocessing child (a Dagster step) joins its children before the
            # interpreter's exit hooks run, so the idle workers would be waited for forever: stop them first,
            # before the pool's own queues close (their finalizers have priority 10).
            multiprocessing.util.Finalize(_pool, _pool.shutdown, kwargs={"cancel_futures": True}, exitpriority=100)
            _warm_up = _pool.submit(int)
        return _pool


def _workers_ready() -> bool:
    """True once the conversion workers answer; the first call starts them."""
    _conversion_pool()
    return _warm_up is not None and _warm_up.done()


def _done(batch: ConvertedBatch) -> Future[ConvertedBatch]:
    future: Future[ConvertedBatch] = Future()
    future.set_result(batch)
    return future


def _raw_batches(source: Collection, query: Mapping[str, Any], **find: Any) -> Iterator[bytes]:
    """The server's replies as BSON bytes. Another client than pymongo's (mongomock in unit tests) gets its
    documents encoded back to BSON, so every client takes the same conversion path."""
    if isinstance(source, Collection):
        cursor = source.find_raw_batches(query, **find)
        try:
            yield from cursor
        finally:
            cursor.close()
        return
    batch_size = find["batch_size"]
    find.pop("allow_disk_use", None)
    page: list[bytes] = []
    for document in source.find(query, **find):
        page.append(bson.encode(document))
        if len(page) >= batch_size:
            yield b"".join(page)
            page = []
    if page:
        yield b"".join(page)


# -- assembling dlt items ---------------------------------------------------------------------------------------


class _Assembler:
    """Turns converted batches into named Arrow tables with their dlt hints, in batch order."""

    def __init__(
        self,
        names: CollectionNames,
        write_disposition: str,
        schema_contract: Any,
        stats: ExtractStats,
        load_id: str | None,
        cursor_path: FieldPath | None = None,
        first_load: bool = False,
    ) -> None:
        self.names = names
        self.load_id = load_id
        self.cursor_path = cursor_path
        self.write_disposition = write_disposition
        self.schema_contract = schema_contract
        self.stats = stats
        self.merge = write_disposition == "merge"
        self.clear_missing = self.merge and not first_load  # the warehouse holds no old array elements to clear
        self.pending: dict[TablePath, list[pa.Table]] = {}
        self.pending_bytes = 0

    def items(self, batch: ConvertedBatch) -> Iterator[TDataItems]:
        """Takes in one converted batch; hands dlt the tables gathered so far once they are big enough.

        dlt computes and validates a table schema for every item it is given, whatever its size, so tables go
        to it in pieces of about ``ITEM_BYTES`` rather than one per server reply."""
        for path, arrow_table in self._tables(batch):
            self.pending.setdefault(path, []).append(arrow_table)
            self.pending_bytes += arrow_table.nbytes
        if self.pending_bytes >= ITEM_BYTES:
            yield from self.flush()

    def flush(self) -> Iterator[TDataItems]:
        """The gathered tables, one item per table (a child table's marker rows join its other rows)."""
        pending, self.pending, self.pending_bytes = self.pending, {}, 0
        for path, tables in pending.items():
            arrow_table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
            yield self._with_hints(self.names.table(path), arrow_table, root=path == ())

    def _tables(self, batch: ConvertedBatch) -> Iterator[tuple[TablePath, pa.Table]]:
        root = batch.tables.get(())
        if root is None or root.rows == 0:
            return
        row_ids: dict[TablePath, pa.Array] = {(): random_row_ids(root.rows)}
        root_names = self.names.table(())
        arrays = {
            DOCUMENT_KEY: batch.keys,
            ROW_ID: row_ids[()],
            LOAD_ID: self._load_ids(root.rows),
            **self._named(root_names, root),
        }
        yield (), pa.table(arrays)
        self.stats.add_rows(root_names.name, root.rows)

        child_keys: dict[TablePath, pa.Array] = {}
        for path, table in batch.tables.items():
            if path == ():
                continue
            parent_ids = row_ids[path[:-1]]
            ids = row_ids[path] = random_row_ids(table.rows)
            names = self.names.table(path)
            arrays = {
                ROOT_KEY: pc.take(batch.keys, table.root_rows),
                ROW_ID: ids,
                PARENT_ID: pc.take(parent_ids, table.parent_rows),
                ROOT_ID: pc.take(row_ids[()], table.root_rows),
                LIST_INDEX: table.list_index,
                LOAD_ID: self._load_ids(table.rows),
                **self._named(names, table),
            }
            if self.merge:
                arrays[DELETED] = pa.nulls(table.rows, pa.bool_())
            child_keys[path] = arrays[ROOT_KEY]
            self.stats.add_rows(names.name, table.rows)
            yield path, pa.table(arrays)
        if self.clear_missing:
            yield from self._clear_markers(batch.keys, child_keys)

    def _clear_markers(
        self, keys: pa.Array, child_keys: dict[TablePath, pa.Array]
    ) -> Iterator[tuple[TablePath, pa.Table]]:
        """Marker rows clearing, in every known child table, the old rows of documents that have none now."""
        for path in list(self.names.tables):
            if path == ():
                continue
            present = child_keys.get(path)
            missing = keys if present is None else pc.filter(keys, pc.invert(pc.is_in(keys, value_set=present)))
            if len(missing) == 0:
                continue
            markers = pa.table({
                ROOT_KEY: missing,
                LOAD_ID: self._load_ids(len(missing)),
                DELETED: pa.array([True] * len(missing), pa.bool_()),
            })
            yield path, markers

    def _load_ids(self, rows: int) -> pa.Array:
        # every row names its package, so a load that never completed can be undone (warehouse.py)
        return pa.repeat(pa.scalar(self.load_id, pa.string()), rows)

    def _named(self, names: TableNames, table: ConvertedTable) -> dict[str, pa.Array]:
        return {names.column(field_path, tag): array for (field_path, tag), array in table.columns.items()}

    def _with_hints(self, names: TableNames, arrow_table: pa.Table, root: bool) -> TDataItems:
        columns = names.take_new_columns()
        columns[LOAD_ID] = _LOAD_ID_COLUMN
        if root:
            columns[ROW_ID] = _ROW_ID_COLUMN
            columns[DOCUMENT_KEY] = {"name": DOCUMENT_KEY, "data_type": "text", "nullable": False}
            keys: dict[str, Any] = {"primary_key": DOCUMENT_KEY} if self.merge else {}
            cursor_column = names.base.get(self.cursor_path) if self.merge and self.cursor_path else None
            if cursor_column is not None:
                # A document whose cursor moved while the read ran is met twice (its index entry moved ahead of
                # the scan); dlt's merge keeps one row per key: the newest, by the cursor. warehouse.py drops the
                # older version's child rows.
                columns.setdefault(cursor_column, {"name": cursor_column})["dedup_sort"] = "desc"
        else:
            columns.update(_CHILD_LINK_COLUMNS)
            columns[ROOT_KEY] = {"name": ROOT_KEY, "data_type": "text", "nullable": False}
            keys = {}
            if self.merge:
                columns[DELETED] = {"name": DELETED, "data_type": "bool", "nullable": True, "hard_delete": True}
                keys = {"merge_key": ROOT_KEY}
        hints = make_hints(
            table_name=names.name,
            write_disposition=self.write_disposition,  # type: ignore[arg-type]
            columns=columns,  # type: ignore[arg-type]
            schema_contract=self.schema_contract,
            additional_table_hints={TABLE_HINT: json.dumps([list(part) for part in names.path])},
            **keys,
        )
        return dlt.mark.with_hints(arrow_table, hints, create_table_variant=True)


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


# -- the resource -----------------------------------------------------------------------------------------------


def mongodb_collection(
    connection_url: str | None,
    database: str,
    collection: str,
    *,
    filter: Mapping[str, Any] | None = None,
    projection: Sequence[str] | Mapping[str, Any] | None = None,
    limit: int | None = None,
    incremental: IncrementalSettings | None = None,
    write_disposition: str = "merge",
    primary_key: Sequence[str] = ("_id",),
    batch_size: int = 1000,
    max_table_nesting: int | None = 2,
    json_paths: Sequence[str] = (),
    max_object_keys: int = 64,
    table_name: str | None = None,
    schema_contract: str | Mapping[str, str] | None = None,
    client: Any = None,
    stats: ExtractStats | None = None,
    conversion_processes: int | None = None,
    count_documents: bool = False,
    first_load: bool = False,
) -> DltResource:
    """A dlt resource that reads one collection; nothing connects until dlt extracts it.

    ``projection`` is a list of fields (``_id``, the primary key and the cursor are always added) or a MongoDB
    projection document used as given. ``incremental`` has ``cursor_field`` and ``initial_value`` (a datetime,
    number, string; an ObjectId or its lowercase hex for ObjectId cursors); documents without the cursor (or
    with null) are not read. ``schema_contract`` is dlt's. ``client`` (pymongo, or mongomock in tests) is used
    instead of connecting to ``connection_url`` and is left open. ``stats`` is filled in while dlt extracts.
    ``conversion_processes`` caps the worker processes (0: convert in this process; default: all cores).
    ``count_documents`` counts the documents matching the read's query (same client, same query) just before
    and just after the read, into ``stats.count_before`` and ``stats.count_after``: the two ends of what a read
    racing with writers can have seen. A ``limit`` is not applied to the counts. ``first_load`` says the warehouse
    holds none of the collection's tables: a merge then writes no rows that clear old array elements.
    """
    label = f"{database}.{collection}"
    if client is None and connection_url is None:
        raise ValueError(f"{label}: give a connection_url or a client")
    if batch_size < 1:
        raise ValueError(f"{label}: batch_size must be at least 1, not {batch_size}")
    cursor_field = incremental.cursor_field if incremental is not None else None
    key_fields = list(primary_key) or ["_id"]
    required_fields = ["_id", *key_fields] if cursor_field is None else ["_id", *key_fields, cursor_field]
    read_projection = _projection(projection, dict.fromkeys(required_fields))
    sort = [(cursor_field or "_id", pymongo.ASCENDING)]
    settings = ConversionSettings(
        max_table_nesting=max_table_nesting,
        json_paths=frozenset(tuple(path.split(".")) for path in json_paths),
        max_object_keys=max_object_keys,
        key_paths=tuple(tuple(key.split(".")) for key in key_fields),
        cursor_path=tuple(cursor_field.split(".")) if cursor_field else None,
    )
    resource_name = table_name or collection
    _allow_schema_growth()
    processes = CONVERSION_PROCESSES if conversion_processes is None else conversion_processes

    def read_collection() -> Iterator[TDataItems]:
        run_stats = stats if stats is not None else ExtractStats()
        run_settings = settings
        schema = dlt.current.source_schema()
        root_table = schema.naming.normalize_tables_path(resource_name)
        names = CollectionNames(root_table, schema.tables)
        known_columns = _named_columns(names)
        try:
            load_id: str | None = dlt.current.load_package_state()["load_id"]
        except CurrentLoadPackageStateNotAvailable:
            load_id = None  # iterated outside a pipeline: nothing is loaded, so nothing can need undoing
        assembler = _Assembler(
            names, write_disposition, schema_contract, run_stats, load_id, run_settings.cursor_path, first_load
        )
        cursor_state = _CursorState.load(dlt.current.resource_state(), cursor_field) if cursor_field else None

        mongo = client if client is not None else connect(connection_url)  # type: ignore[arg-type]
        try:
            source = mongo[database][collection]
            start = None
            if cursor_state is not None and cursor_field is not None:
                start = cursor_state.start_value()
                if cursor_state.legacy:
                    start = _initial_server_value(start, source, cursor_field)
                if start is None and incremental is not None and incremental.initial_value is not None:
                    start = _initial_server_value(incremental.initial_value, source, cursor_field)
            query = _query(filter, cursor_field, start)
            logger.debug("%s: find %s sort %s", label, query, sort)
            if count_documents:
                run_stats.count_before = _count(source, query, run_stats)
            raw_batches = _raw_batches(
                source,
                query,
                projection=read_projection,
                sort=sort,
                batch_size=batch_size,
                limit=limit or 0,
                # a cursor field without an index is sorted by the server; past 100 MB it needs the disk
                allow_disk_use=cursor_field is not None or None,
            )
            boundary = cursor_state.boundary() if cursor_state is not None else (None, frozenset())
            pending: deque[tuple[Future[ConvertedBatch], bytes]] = deque()
            in_flight = max(1, processes) * BATCHES_IN_FLIGHT_PER_PROCESS
            for number, raw in enumerate(raw_batches):
                if not names.json_paths <= run_settings.json_paths:
                    run_settings = replace(run_settings, json_paths=run_settings.json_paths | names.json_paths)
                if processes == 0 or number < BATCHES_BEFORE_WORKERS or not _workers_ready():
                    # in this process until the workers have started (they start after the first few batches, in
                    # the background): a small collection never waits for them, a large one never idles meanwhile
                    pending.append((_done(_convert(raw, run_settings, boundary, label)), raw))
                else:
                    pending.append((_conversion_pool().submit(convert_raw_batch, raw, run_settings, *boundary), raw))
                    run_stats.batches_in_workers += 1
                while len(pending) >= in_flight or (pending and pending[0][0].done()):
                    batch = _result(*pending.popleft(), run_settings, boundary, label)
                    yield from _use(batch, assembler, cursor_state, run_stats)
            while pending:
                batch = _result(*pending.popleft(), run_settings, boundary, label)
                yield from _use(batch, assembler, cursor_state, run_stats)
            yield from assembler.flush()
            if count_documents and run_stats.count_error is None:
                run_stats.count_after = _count(source, query, run_stats)
        finally:
            if client is None:
                mongo.close()
        if cursor_state is not None:
            cursor_state.save()
        run_stats.columns = names.all_paths()
        run_stats.new_columns = _new_columns(names, known_columns, settings.json_paths)
        logger.debug("%s: done, %d documents", label, run_stats.documents)

    return dlt.resource(  # type: ignore[call-overload, no-any-return]
        read_collection,
        name=resource_name,
        write_disposition=write_disposition,
        max_table_nesting=max_table_nesting,
        schema_contract=schema_contract,
    )


def _count(source: Collection, query: Mapping[str, Any], stats: ExtractStats) -> int | None:
    """``count_documents(query)``; a query the server cannot count (``$where``, ``$near``) is noted, not raised:
    the read itself takes it. Transient errors are raised, to be retried with the read."""
    try:
        return int(source.count_documents(query))
    except pymongo.errors.OperationFailure as error:
        if isinstance(error, pymongo.errors.ExecutionTimeout):
            raise
        stats.count_error = mask_secrets(f"{type(error).__name__}: {_FULL_ERROR.split(str(error), maxsplit=1)[0]}")
        return None


def _named_columns(names: CollectionNames) -> set[tuple[TablePath, FieldPath, str]]:
    return {(path, field_path, tag) for path, table in names.tables.items() for field_path, tag in table.columns}


def _new_columns(
    names: CollectionNames, known: set[tuple[TablePath, FieldPath, str]], json_paths: frozenset[FieldPath]
) -> list[NewColumn]:
    """The columns named since ``known`` was taken, each with the column of its path's first type."""
    added = []
    for path, table in names.tables.items():
        tag_of = {name: tag for (_, tag), name in table.columns.items()}
        for (field_path, tag), name in table.columns.items():
            if (path, field_path, tag) in known:
                continue
            plain = table.base.get(field_path, name)
            flattened_before: tuple[str, ...] = ()
            if tag == JSON_TAG:
                flattened_before = tuple(
                    column
                    for (other_path, _), column in table.columns.items()
                    if len(other_path) > len(field_path) and other_path[: len(field_path)] == field_path
                )
            added.append(NewColumn(
                table=table.name,
                column=name,
                path=display_path(path, field_path),
                type=tag,
                plain_column=plain,
                plain_type=tag_of.get(plain, tag),
                configured_json=tag == JSON_TAG and flat_path(path, field_path) in json_paths,
                flattened_before=flattened_before,
            ))
    return added


def _use(
    batch: ConvertedBatch,
    assembler: _Assembler,
    cursor_state: _CursorState | None,
    stats: ExtractStats,
) -> Iterator[TDataItems]:
    yield from assembler.items(batch)
    stats.batches += 1
    stats.documents += batch.documents
    stats.skipped_at_boundary += batch.skipped
    if cursor_state is not None:
        cursor_state.advance(batch)
    if stats.on_progress is not None:
        stats.on_progress(stats.documents)


def _convert(
    raw: bytes, settings: ConversionSettings, boundary: tuple[str | None, frozenset[str]], label: str
) -> ConvertedBatch:
    try:
        return convert_raw_batch(raw, settings, *boundary)
    except Exception as error:
        raise DocumentConversionError.locate(raw, settings, boundary, label, error) from error


def _result(
    future: Future[ConvertedBatch],
    raw: bytes,
    settings: ConversionSettings,
    boundary: tuple[str | None, frozenset[str]],
    label: str,
) -> ConvertedBatch:
    try:
        return future.result()
    except Exception as error:
        raise DocumentConversionError.locate(raw, settings, boundary, label, error) from error


@dataclass
class _CursorState:
    """An incremental cursor kept in dlt's resource state: ``last_value`` for people (ISO dates), and
    ``last_value_bson`` (canonical Extended JSON) plus ``keys_at_last_value`` for the next run."""

    state: dict[str, Any]
    last_value: Any = None
    last_identity: str | None = None
    keys: list[str] = field(default_factory=list)
    previous_identity: str | None = None
    previous_keys: frozenset[str] = frozenset()
    legacy: bool = False
    """The state was written by version 1.0 (dlt's incremental): ``last_value`` only, in its converted form."""

    @classmethod
    def load(cls, resource_state: dict[str, Any], cursor_field: str) -> _CursorState:
        state = resource_state.setdefault("incremental", {}).setdefault(cursor_field, {})
        cursor = cls(state)
        if "last_value_bson" in state:
            cursor.last_value = json_util.loads(state["last_value_bson"], json_options=_CURSOR_JSON)
            cursor.last_identity = cursor.previous_identity = identity(cursor.last_value)
            cursor.keys = list(state.get("keys_at_last_value", []))
            cursor.previous_keys = frozenset(cursor.keys)
        elif state.get("last_value") is not None:
            cursor.last_value, cursor.last_identity, cursor.legacy = state["last_value"], "legacy", True
        return cursor

    def start_value(self) -> Any:
        """The BSON value to read from (``$gte``), or None on a first run. A date is handed to the client as a
        datetime where Python can hold it: both encode to the same BSON date."""
        if self.last_identity is None:
            return None
        if isinstance(self.last_value, bson.datetime_ms.DatetimeMS):
            try:
                return self.last_value.as_datetime(_DISPLAY_DATES)
            except (OverflowError, ValueError):
                return self.last_value
        return self.last_value

    def boundary(self) -> tuple[str | None, frozenset[str]]:
        return self.previous_identity, self.previous_keys

    def advance(self, batch: ConvertedBatch) -> None:
        if batch.documents == 0:
            return
        batch_identity = identity(batch.last_cursor)
        if batch_identity == self.last_identity:
            self.keys.extend(batch.keys_at_last_cursor)
        else:
            self.last_value, self.last_identity, self.keys = batch.last_cursor, batch_identity, list(
                batch.keys_at_last_cursor
            )

    def save(self) -> None:
        if self.last_identity is None:
            return
        self.state["last_value"] = display_cursor(self.last_value)
        self.state["last_value_bson"] = json_util.dumps(self.last_value, json_options=_CURSOR_JSON)
        self.state["keys_at_last_value"] = sorted(set(self.keys))


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
        mongo = client if client is not None else connect(connection_url)  # type: ignore[arg-type]
        try:
            collections = sorted(
                name for name in mongo[database].list_collection_names() if not name.startswith("system.")
            )
        finally:
            if client is None:
                mongo.close()
    for collection in collections:
        yield mongodb_collection(connection_url, database, collection, **options)
