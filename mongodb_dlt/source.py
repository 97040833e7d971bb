"""Our dlt source for MongoDB: one resource per collection, read with a pymongo cursor in pages.

``mongodb_collection`` reads one collection; ``mongodb`` groups several into a dlt source. The server gets the
user filter and, for an incremental collection, ``{cursor: {"$gte": last_value}}`` sorted by the cursor, so a
run reads only new documents (dlt drops the boundary documents it already loaded, by primary key). Without
incremental the read is sorted by ``_id`` so it is deterministic. Memory stays bounded by one page of
``batch_size`` documents.

BSON values are converted before dlt sees them (``convert_value``, ``convert_document``):

=========================================  =============================================  ===================
BSON                                       Python value handed to dlt                     DuckDB column
=========================================  =============================================  ===================
Double, String, Boolean, Null              unchanged                                      DOUBLE, VARCHAR...
Int32, Int64                               ``int``                                        BIGINT
ObjectId                                   24-hex lowercase ``str``                       VARCHAR
Date                                       timezone-aware UTC ``datetime``                TIMESTAMPTZ
Date outside years 1..9999                 Extended JSON text ``{"$date": ...}``          ``<col>__v_text``
Decimal128                                 ``decimal.Decimal``, 9 fractional digits max   DECIMAL(38,9)
Decimal128 NaN, +-Infinity, abs >= 1e29    ``None`` (a warning is logged)                 NULL
Binary subtype 4 or 3 (UUID)               canonical UUID ``str`` (subtype 3: byte order  VARCHAR
                                           of the URL's uuidRepresentation, else as is)
Binary, other subtypes                     base64 ``str`` (standard alphabet, padded)     VARCHAR
Regex, Code, Code with scope, Timestamp,   Extended JSON v2 canonical text, lossless:     VARCHAR
MinKey, MaxKey, DBRef                      ``{"$timestamp": {"t": 1, "i": 2}}``
Embedded document                          ``dict``, flattened by dlt                     ``parent__child``
Array                                      ``list``, a child table                        ``<table>__<field>``
Root ``_id`` that is a document or array   Extended JSON text: one key column             VARCHAR
=========================================  =============================================  ===================

Decimal128 lands in dlt's ``decimal`` type, precision 38 and scale 9 by default (DuckDB, BigQuery NUMERIC).
A value with more fractional digits (typical of a Decimal128 built from a float) is rounded half-even to 9:
as is, the parquet writer refuses it and the whole collection fails to load. Values the type cannot hold at
all (NaN, infinities, more than 29 integer digits) become NULL.

Nesting is bounded by ``max_table_nesting`` (dlt's own hint on the resource): deeper documents and arrays
land as one JSON column. Sub-documents whose keys are data rather than field names (ObjectIds, 32/40/64-hex
hashes, UUIDs, ISO dates, numbers) or that have more than ``max_object_keys`` keys would explode into a column
per key; they are stored whole as dlt's ``json`` type (DuckDB ``JSON``, BigQuery ``JSON``), as are the dotted
``json_paths`` (through arrays too: ``items.attributes``). An array holding such a sub-document is stored
whole. The decision is a ``json`` column hint that dlt keeps in the schema, so a path, once JSON, stays JSON
in every later run; the hint reaches the schema during extraction, before dlt normalizes any document of the
run, so all documents of a run land alike. Only rows loaded by earlier runs, before a path first looked
data-keyed, keep their flattened columns.
"""

import base64
import functools
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Protocol

import dlt
import pymongo
from bson import DBRef, MaxKey, MinKey, ObjectId, Regex, json_util
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.timestamp import Timestamp
from dlt.common.schema.typing import TColumnSchema
from dlt.common.typing import TDataItems
from dlt.extract import DltResource
from dlt.extract.hints import TResourceHints
from dlt.extract.incremental import Incremental
from pymongo.collection import Collection

logger = logging.getLogger(__name__)

DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000
"""How long pymongo looks for a usable server before failing, unless the connection URL sets its own."""

DECIMAL_SCALE = 9
"""Fractional digits of dlt's default ``decimal`` column (precision 38, scale 9)."""

_DECIMAL_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_DECIMAL_LIMIT = Decimal(10) ** (38 - DECIMAL_SCALE)
# Decimal128 carries 34 significant digits; the default context (28) would round while quantizing.
_DECIMAL_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN)

_HEX_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_DATA_KEY = re.compile(
    r"[0-9a-fA-F]{24}|[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}"  # ObjectId, md5, sha1, sha256
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUID
    r"|\d{4}-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?"  # ISO date or month
    r"|[+-]?\d+(\.\d+)?"  # number
)
_UUID_SUBTYPES = (3, 4)
_EXTENDED_JSON_TYPES = (Regex, Code, Timestamp, MinKey, MaxKey, DBRef, DatetimeMS, re.Pattern)


class IncrementalSettings(Protocol):
    """What the source needs from an incremental setting (config.IncrementalConfig fits)."""

    cursor_field: str
    initial_value: Any


def convert_value(value: Any) -> Any:
    """One BSON value as a type dlt loads losslessly (see the table in the module docstring)."""
    value_type = type(value)
    if value_type in (str, int, float, bool) or value is None:
        return value
    if value_type is dict:
        return {key: convert_value(item) for key, item in value.items()}
    if value_type is list:
        return [convert_value(item) for item in value]
    if value_type is ObjectId:
        return str(value)
    if isinstance(value, datetime):
        return _as_utc(value)
    if value_type is Decimal128:
        return _fit_decimal(value.to_decimal())
    if isinstance(value, Decimal):
        return _fit_decimal(value)
    if isinstance(value, _EXTENDED_JSON_TYPES):  # before str: Code is a str
        return _extended_json(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):  # Binary is a bytes subclass
        return _binary(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {key: convert_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [convert_value(item) for item in value]
    return _extended_json(value)


def convert_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A whole MongoDB document as a dict dlt normalizes; a document or array ``_id`` becomes one text key."""
    converted = {key: convert_value(value) for key, value in document.items()}
    document_id = document.get("_id")
    if isinstance(document_id, (Mapping, list)):
        converted["_id"] = _extended_json(document_id)
    return converted


@functools.lru_cache(maxsize=8192)
def looks_like_data_key(key: str) -> bool:
    """True for keys that are data rather than field names: ObjectIds, hashes, UUIDs, ISO dates, numbers."""
    return _DATA_KEY.fullmatch(key) is not None


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if type(value) is not datetime:  # pendulum and other subclasses, e.g. from dlt's state
        value = datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=UTC,
        )
    return value


def _fit_decimal(value: Decimal) -> Decimal | None:
    if value.is_finite():
        if value.as_tuple().exponent < -DECIMAL_SCALE:  # type: ignore[operator]  # finite: exponent is an int
            value = value.quantize(_DECIMAL_QUANTUM, context=_DECIMAL_CONTEXT)
        if abs(value) < _DECIMAL_LIMIT:
            return value
    _warn_once(f"Decimal128 values DECIMAL(38,{DECIMAL_SCALE}) cannot hold, such as {value}, load as NULL")
    return None


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    logger.warning(message)


def _binary(value: bytes) -> str:
    if isinstance(value, Binary) and value.subtype in _UUID_SUBTYPES and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return base64.b64encode(value).decode("ascii")


def _extended_json(value: Any) -> str:
    if isinstance(value, re.Pattern):
        value = Regex.from_native(value)
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


class _JsonColumns:
    """Finds the sub-documents stored whole as JSON and turns newly found ones into dlt column hints.

    Paths are tracked the way dlt's normalizer lays out tables: ``table`` holds the keys down to the innermost
    array (the child table), ``columns`` the keys below it (flattened into one ``a__b`` column).
    """

    def __init__(
        self, json_paths: Iterable[str], max_object_keys: int, max_table_nesting: int | None
    ) -> None:
        self._json_paths = frozenset(tuple(path.split(".")) for path in json_paths)
        self._max_object_keys = max_object_keys
        self._max_depth = sys.maxsize if max_table_nesting is None else max_table_nesting
        self._columns: dict[tuple[str, ...], dict[str, TColumnSchema]] = {}

    def scan(self, documents: Iterable[dict[str, Any]]) -> TResourceHints | None:
        """Hints for every JSON column known so far, or None when ``documents`` added none."""
        found = False
        for document in documents:
            found |= self._walk(document, (), (), (), 0)
        return self._hints() if found else None

    def _walk(
        self,
        document: dict[str, Any],
        keys: tuple[str, ...],
        table: tuple[str, ...],
        columns: tuple[str, ...],
        depth: int,
    ) -> bool:
        # dlt itself stores every container deeper than max_table_nesting as JSON: no hint needed there
        if depth + 1 > self._max_depth:
            return False
        found = False
        for key, value in document.items():
            value_type = type(value)
            if value_type is dict:
                path = (*keys, key)
                if path in self._json_paths or self._is_data_map(value):
                    found |= self._add(table, (*columns, key))
                else:
                    found |= self._walk(value, path, table, (*columns, key), depth + 1)
            elif value_type is list:
                path = (*keys, key)
                if path in self._json_paths or any(
                    type(item) is dict and self._is_data_map(item) for item in value
                ):
                    found |= self._add(table, (*columns, key))
                    continue
                child_table = (*table, *columns, key)
                for item in value:
                    if type(item) is dict:
                        found |= self._walk(item, path, child_table, (), depth + 1)
                    elif type(item) is list:
                        # dlt wraps a nested array as {"list": [...]}, one level deeper, in this child table
                        found |= self._walk({"list": item}, path, child_table, (), depth + 2)
        return found

    def _is_data_map(self, document: dict[str, Any]) -> bool:
        return len(document) > self._max_object_keys or any(looks_like_data_key(key) for key in document)

    def _add(self, table: tuple[str, ...], columns: tuple[str, ...]) -> bool:
        # raw keys joined by dlt's path separator: dlt normalizes this name as it names flattened columns
        name = "__".join(columns)
        table_columns = self._columns.setdefault(table, {})
        if name in table_columns:
            return False
        table_columns[name] = {"name": name, "data_type": "json"}
        return True

    def _hints(self) -> TResourceHints:
        nested = {table: {"columns": dict(columns)} for table, columns in self._columns.items() if table}
        return dlt.mark.make_hints(
            columns=dict(self._columns.get((), {})),
            # dlt replaces nested hints as a whole, so every nested table known so far goes out each time
            nested_hints=nested or None,  # type: ignore[arg-type]
        )


def _projection(
    projection: Sequence[str] | Mapping[str, Any] | None, required: Iterable[str]
) -> dict[str, Any] | None:
    if projection is None:
        return None
    if isinstance(projection, Mapping):
        return dict(projection)
    fields = list(projection)
    for field in required:
        # MongoDB rejects projecting both a field and its parent or child ("path collision")
        if not any(field == f or field.startswith(f"{f}.") or f.startswith(f"{field}.") for f in fields):
            fields.append(field)
    return dict.fromkeys(fields, 1)


def _query(user_filter: Mapping[str, Any] | None, cursor_field: str | None, start: Any) -> dict[str, Any]:
    query = dict(user_filter or {})
    if cursor_field is None:
        return query
    # documents without the cursor (or with null) could never be read incrementally later: never read them
    condition = {cursor_field: {"$ne": None} if start is None else {"$gte": start}}
    return {"$and": [query, condition]} if query else condition


def _server_value(value: Any, collection: Collection, cursor_field: str) -> Any:
    """The cursor value dlt keeps (a converted value) as the BSON value the server compares with."""
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, Decimal):
        return Decimal128(value)
    if isinstance(value, str) and _HEX_OBJECT_ID.fullmatch(value):
        # the same 24 hex digits may be an ObjectId or a string: the server's type order matches only one
        holds_object_ids = collection.find_one({cursor_field: {"$type": "objectId"}}, projection={"_id": 1})
        if holds_object_ids is not None:
            return ObjectId(value)
    return value


def _uri_sets(connection_url: str, option: str) -> bool:
    query = connection_url.partition("?")[2].lower()
    return any(part.partition("=")[0] == option.lower() for part in re.split(r"[&;]", query))


def connect(connection_url: str) -> pymongo.MongoClient:
    """A pymongo client set up for conversion: timezone-aware UTC dates, standard UUIDs, out-of-range dates
    kept as DatetimeMS. Options the URL sets itself win over our defaults."""
    options: dict[str, Any] = {"tz_aware": True, "datetime_conversion": "DATETIME_AUTO"}
    defaults = {
        "uuidRepresentation": "standard",
        "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
        "appname": "mongodb-dlt",
    }
    options.update({key: value for key, value in defaults.items() if not _uri_sets(connection_url, key)})
    return pymongo.MongoClient(connection_url, **options)


def _pages(
    documents: Iterable[Mapping[str, Any]], batch_size: int, json_columns: _JsonColumns, label: str
) -> Iterator[TDataItems]:
    page: list[dict[str, Any]] = []
    pages = total = 0
    for document in documents:
        page.append(convert_document(document))
        if len(page) < batch_size:
            continue
        yield from _emit(page, json_columns)
        pages, total = pages + 1, total + len(page)
        logger.debug("%s: page %d read, %d documents so far", label, pages, total)
        page = []
    if page:
        yield from _emit(page, json_columns)
        pages, total = pages + 1, total + len(page)
    logger.debug("%s: done, %d documents in %d pages", label, total, pages)


def _emit(page: list[dict[str, Any]], json_columns: _JsonColumns) -> Iterator[TDataItems]:
    hints = json_columns.scan(page)
    if hints is not None:
        # hints travel on an empty item of their own so dlt applies them even when incremental drops the page
        yield dlt.mark.with_hints([], hints)
    yield page


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
    max_table_nesting: int | None = None,
    json_paths: Sequence[str] = (),
    max_object_keys: int = 64,
    table_name: str | None = None,
    schema_contract: str | Mapping[str, str] | None = None,
    client: Any = None,
) -> DltResource:
    """A dlt resource that reads one collection; nothing connects until dlt extracts it.

    ``projection`` is a list of fields (``_id``, the primary key and the cursor are always added) or a MongoDB
    projection document used as given. ``incremental`` has ``cursor_field`` and ``initial_value`` (of the
    cursor's converted type: datetime, number, str; an ObjectId or its lowercase hex for ObjectId cursors);
    dlt keeps the last value in the resource's state, and documents without the cursor (or with null) are not
    read. ``schema_contract`` is dlt's (``freeze`` fails the load on a new column or type). ``client`` (pymongo
    or mongomock) is used instead of connecting to ``connection_url`` and is left open.
    """
    if client is None and connection_url is None:
        raise ValueError(f"{database}.{collection}: give a connection_url or a client")
    if batch_size < 1:
        raise ValueError(f"{database}.{collection}: batch_size must be at least 1, not {batch_size}")
    cursor_field = incremental.cursor_field if incremental is not None else None
    required_fields = ["_id", *primary_key] if cursor_field is None else ["_id", *primary_key, cursor_field]
    read_projection = _projection(projection, dict.fromkeys(required_fields))
    sort = [(cursor_field or "_id", pymongo.ASCENDING)]
    label = f"{database}.{collection}"

    def read_collection(cursor: Incremental[Any] | None = None) -> Iterator[TDataItems]:
        mongo = client if client is not None else connect(connection_url)  # type: ignore[arg-type]
        try:
            source = mongo[database][collection]
            start = None
            if cursor is not None and cursor.last_value is not None:
                start = _server_value(cursor.last_value, source, cursor.cursor_path)
            query = _query(filter, cursor_field, start)
            logger.debug("%s: find %s sort %s", label, query, sort)
            documents = source.find(
                query,
                projection=read_projection,
                sort=sort,
                batch_size=batch_size,
                limit=limit or 0,
                # a cursor field without an index is sorted by the server; past 100 MB it needs the disk
                allow_disk_use=cursor_field is not None or None,
            )
            try:
                yield from _pages(
                    documents, batch_size, _JsonColumns(json_paths, max_object_keys, max_table_nesting), label
                )
            finally:
                documents.close()
        finally:
            if client is None:
                mongo.close()

    cursor_settings = None
    if incremental is not None:
        initial_value = incremental.initial_value
        cursor_settings = dlt.sources.incremental(
            incremental.cursor_field,
            initial_value=None if initial_value is None else convert_value(initial_value),
            on_cursor_value_missing="exclude",
        )
    return dlt.resource(  # type: ignore[call-overload, no-any-return]
        read_collection,
        name=table_name or collection,
        write_disposition=write_disposition,
        primary_key=list(primary_key) or None,
        max_table_nesting=max_table_nesting,
        incremental=cursor_settings,
        schema_contract=schema_contract,
    )


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
