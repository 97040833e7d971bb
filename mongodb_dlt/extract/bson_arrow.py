"""Raw BSON batches -> Arrow columns, one set per table, with every value kept in a column of its own type.

This module only converts: it knows BSON and Arrow, not dlt or column names. A batch (the bytes of a server
reply) is decoded by bson's C decoder, walked once, and comes out as ``ConvertedBatch``: for the root table and
for every child table (one per array path), the rows, the links to the parent rows, and one Arrow array per
``(field path, type tag)`` pair. A field that holds several BSON types gives several pairs; ``columns.py``
names them (the first type seen owns the plain name, the others get ``__v_<tag>`` variants). Nothing is ever
coerced from one type into another.

The common case of a batch (the usual types, no data-keyed maps, no ``json_paths``, keyed by ``_id``) is walked
in C straight from the BSON bytes (``_fastwalk.c``, built with the package when a C compiler is there); anything
else, and every batch when the extension is missing, goes through bson's decoder and the Python walk below. Both
give the same columns (``mongodb_dlt_tests/unit/test_fastwalk.py``). Batches are converted in worker processes
once a read is long enough (``workers.py``). Which tag each BSON value gets, and its Arrow type, is
``bson_types.py``'s table. What bson's decoder would silently drop (a repeated key, a Symbol's type) is looked for
in the raw bytes first: ``bson_decode.py``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import pyarrow as pa

from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract.bson_decode import decode_batch, decode_keeping_symbols, element_spans, inspect_batch
from mongodb_dlt.extract.bson_types import (
    ARROW_TYPES,
    CODEC_OPTIONS,
    DECIMAL_TYPE,
    LIST_LEVEL,
    FieldPath,
    Symbol,
    TablePath,
    arrow_type,
    composite_identity,
    extended_json,
    get_path,
    identity,
    keys_are_data,
    relaxed_json,
    sort_bracket,
    tagged,
)
from mongodb_dlt.results import JSON_TAG

try:
    from mongodb_dlt.extract import _fastwalk
except ImportError:  # built without a C compiler: every batch takes the Python walk
    _fastwalk = None

_ZERO_DECIMAL = bytes(16)
_ZERO_OBJECT_ID = bytes(12)
_DATE_MS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class ConversionSettings:
    """What the walk needs to know of a collection; pickled to the worker processes. Built from the collection's
    options (``source.conversion_settings``), whose fields hold the defaults."""

    max_table_nesting: int | None
    """Nesting levels that become child tables; None: no limit."""
    max_object_keys: int
    key_paths: tuple[FieldPath, ...]
    """The primary key's fields, as key tuples."""
    json_paths: frozenset[FieldPath] = frozenset()
    """Dotted paths stored as JSON, as key tuples; through arrays too (``items.attributes``). Empty: none."""
    cursor_path: FieldPath | None = None
    """The incremental cursor's field; None: not incremental."""


@dataclass
class ConvertedTable:
    """One table's rows of one batch. ``parent_rows``/``root_rows`` index rows of the parent and root tables
    of the same batch; all None for the root table."""

    rows: int
    columns: dict[tuple[FieldPath, str], pa.Array]
    parent_rows: pa.Array | None = None
    root_rows: pa.Array | None = None
    list_index: pa.Array | None = None


Boundary = Mapping[str, frozenset[str]]
"""The previous incremental run's last cursor identity in each type bracket, and the keys it loaded there: a
document with such a cursor and key is skipped by the walk."""


@dataclass
class CursorEnd:
    """The cursor value of the last document of one type bracket in a batch (the reads are sorted on the cursor,
    so the brackets come one after the other), and the keys of the documents of the batch at that value."""

    value: Any
    keys: list[str]


@dataclass
class ConvertedBatch:
    """A batch of documents as Arrow columns per table, plus what incremental loading and errors need."""

    documents: int
    tables: dict[TablePath, ConvertedTable]
    keys: pa.Array
    cursor_ends: list[CursorEnd] = field(default_factory=list)
    """Per type bracket of the cursor met in the batch, in read order: where the batch ends in that bracket."""
    skipped: int = 0
    """Documents left out because the previous run loaded them (the incremental boundary)."""


class _TableBuilder:
    """Columns of one table under construction. ``slots`` maps ``(prefix, key)`` to ``{tag: values}``; a
    column list is padded with None up to the row it is written at, and to ``rows`` when built."""

    __slots__ = ("list_index", "parent_rows", "root_rows", "rows", "slots")

    def __init__(self) -> None:
        self.rows = 0
        self.slots: dict[tuple[FieldPath, str], dict[str, list[Any]]] = {}
        self.parent_rows: list[int] = []
        self.root_rows: list[int] = []
        self.list_index: list[int] = []

    def put(self, row: int, prefix: FieldPath, key: str, tag: str, value: Any) -> None:
        slot = self.slots.get((prefix, key))
        if slot is None:
            slot = self.slots[(prefix, key)] = {}
        column = slot.get(tag)
        if column is None:
            column = slot[tag] = []
        if len(column) < row:
            column.extend([None] * (row - len(column)))
        column.append(value)

    def build(self, is_root: bool) -> ConvertedTable:
        columns = {}
        for (prefix, key), slot in self.slots.items():
            field_path = prefix if key == _ELEMENT else (*prefix, key)
            for tag, values in slot.items():
                if len(values) < self.rows:
                    values.extend([None] * (self.rows - len(values)))
                if tag == "decimal":
                    columns[(field_path, tag)] = _decimal_array(values)
                elif tag == "objectid":
                    columns[(field_path, tag)] = _object_id_array(values)
                elif tag == "date":
                    # BSON milliseconds as microseconds: the precision warehouses default to (DuckDB TIMESTAMPTZ)
                    columns[(field_path, tag)] = pa.array(values, type=_DATE_MS).cast(ARROW_TYPES["date"])
                else:
                    columns[(field_path, tag)] = pa.array(values, type=arrow_type(tag))
        if is_root:
            return ConvertedTable(self.rows, columns)
        return ConvertedTable(
            self.rows,
            columns,
            parent_rows=pa.array(self.parent_rows, type=pa.int64()),
            root_rows=pa.array(self.root_rows, type=pa.int64()),
            list_index=pa.array(self.list_index, type=pa.int64()),
        )


_ELEMENT = "\x00element"
"""Key under which a scalar array element is put: its field path is the empty path ``()``."""


class _Walker:
    """One pass over the decoded documents of a batch, filling a ``_TableBuilder`` per table."""

    def __init__(self, settings: ConversionSettings) -> None:
        self.settings = settings
        self.max_depth = _max_depth(settings)
        self.tables: dict[TablePath, _TableBuilder] = {(): _TableBuilder()}
        self.data_map_cache: dict[tuple[str, ...], bool] = {}

    def document(self, document: dict[str, Any]) -> None:
        root = self.tables[()]
        row = root.rows
        root.rows += 1
        self.fields(document, root, (), row, (), row, 0)

    def fields(
        self,
        document: dict[str, Any],
        table: _TableBuilder,
        table_path: TablePath,
        row: int,
        prefix: FieldPath,
        root_row: int,
        depth: int,
    ) -> None:
        # the converter's hot loop: common types inline, table.put inlined
        slots = table.slots
        for key, value in document.items():
            value_type = type(value)
            if value_type is str:
                tag = "string"
            elif value_type is int:
                tag = "int64"
            elif value_type is float:
                tag = "double"
            elif value_type is dict:
                self.subdocument(value, table, table_path, row, (*prefix, key), root_row, depth + 1)
                continue
            elif value_type is list:
                self.array(value, table, table_path, row, (*prefix, key), root_row, depth + 1)
                continue
            elif value_type is bool:
                tag = "bool"
            elif value is None:
                continue
            else:
                tag, value = tagged(value)  # type: ignore[misc]  # not None here
            slot = slots.get((prefix, key))
            if slot is None:
                slot = slots[(prefix, key)] = {}
            column = slot.get(tag)
            if column is None:
                column = slot[tag] = []
            if len(column) < row:
                column.extend([None] * (row - len(column)))
            column.append(value)

    def is_json_path(self, table_path: TablePath, path: FieldPath) -> bool:
        json_paths = self.settings.json_paths
        if not json_paths:
            return False
        return tuple(key for part in (*table_path, path) for key in part if key != LIST_LEVEL) in json_paths

    def subdocument(
        self,
        value: dict[str, Any],
        table: _TableBuilder,
        table_path: TablePath,
        row: int,
        path: FieldPath,
        root_row: int,
        depth: int,
    ) -> None:
        if depth > self.max_depth or self.is_json_path(table_path, path) or self.is_data_map(value):
            table.put(row, path[:-1], path[-1], JSON_TAG, relaxed_json(value))
        else:
            self.fields(value, table, table_path, row, path, root_row, depth)

    def array(
        self,
        values: list[Any],
        table: _TableBuilder,
        table_path: TablePath,
        row: int,
        path: FieldPath,
        root_row: int,
        depth: int,
    ) -> None:
        if depth > self.max_depth or self.is_json_path(table_path, path):
            table.put(row, path[:-1], path[-1], JSON_TAG, relaxed_json(values))
            return
        child_path = (*table_path, path)
        child = self.tables.get(child_path)
        if child is None:
            child = self.tables[child_path] = _TableBuilder()
        slot = child.slots.get(((), _ELEMENT))
        if slot is None:
            slot = child.slots[((), _ELEMENT)] = {}
        parent_rows, root_rows, list_index = child.parent_rows, child.root_rows, child.list_index
        for index, item in enumerate(values):
            child_row = child.rows
            child.rows += 1
            parent_rows.append(row)
            root_rows.append(root_row)
            list_index.append(index)
            item_type = type(item)
            # scalar elements inline, like fields(): arrays of strings and numbers are common and long
            if item_type is str:
                tag = "string"
            elif item_type is int:
                tag = "int64"
            elif item_type is float:
                tag = "double"
            elif item_type is dict:
                if self.is_data_map(item):
                    child.put(child_row, (), _ELEMENT, JSON_TAG, relaxed_json(item))
                else:
                    self.fields(item, child, child_path, child_row, (), root_row, depth)
                continue
            elif item_type is list:
                self.array(item, child, child_path, child_row, (LIST_LEVEL,), root_row, depth + 1)
                continue
            elif item is None:
                continue
            else:
                tag, item = tagged(item)  # type: ignore[misc]  # not None here
            column = slot.get(tag)
            if column is None:
                column = slot[tag] = []
            if len(column) < child_row:
                column.extend([None] * (child_row - len(column)))
            column.append(item)

    def is_data_map(self, document: dict[str, Any]) -> bool:
        """Keys that look like data (``looks_like_data_key``), or more than ``max_object_keys`` of them; cached by
        key tuple, since most documents share their keys."""
        keys = tuple(document)
        found = self.data_map_cache.get(keys)
        if found is None:
            found = keys_are_data(keys, self.settings.max_object_keys)
            if len(self.data_map_cache) < 10_000:
                self.data_map_cache[keys] = found
        return found


def convert_documents(
    documents: Iterable[dict[str, Any]], settings: ConversionSettings, boundary: Boundary | None = None
) -> ConvertedBatch:
    """Converts decoded documents. Documents whose cursor identity is in ``boundary`` with their key were loaded
    by the previous incremental run and are skipped."""
    walker = _Walker(settings)
    keys: list[str] = []
    cursor_path = settings.cursor_path
    ends = _CursorEnds()
    documents_seen = skipped = 0
    for document in documents:
        documents_seen += 1
        key = composite_identity(document, settings.key_paths)
        if cursor_path is not None:
            cursor = get_path(document, cursor_path)
            if type(cursor) is Symbol:  # the server compares a Symbol and a String as one type: the same bound
                cursor = cursor.text
            cursor_identity = identity(cursor)
            if boundary and key in boundary.get(cursor_identity, ()):
                skipped += 1
                continue
            ends.add(cursor, cursor_identity, key)
        keys.append(key)
        walker.document(document)
    tables = {path: builder.build(path == ()) for path, builder in walker.tables.items()}
    return ConvertedBatch(
        documents=documents_seen - skipped,
        tables=tables,
        keys=pa.array(keys, type=pa.string()),
        cursor_ends=ends.ends,
        skipped=skipped,
    )


class _CursorEnds:
    """``CursorEnd``s collected document by document, in read order."""

    def __init__(self) -> None:
        self.ends: list[CursorEnd] = []
        self.bracket: int | None = None
        self.identity: str | None = None

    def add(self, cursor: Any, cursor_identity: str, key: str) -> None:
        if cursor_identity == self.identity:
            self.ends[-1].keys.append(key)
            return
        bracket = sort_bracket(cursor)
        end = CursorEnd(cursor, [key])
        if bracket == self.bracket:
            self.ends[-1] = end
        else:
            self.ends.append(end)
        self.bracket, self.identity = bracket, cursor_identity


def convert_raw_batch(raw: bytes, settings: ConversionSettings, boundary: Boundary | None = None) -> ConvertedBatch:
    """Decodes the concatenated BSON documents of one server reply and converts them: in C when the batch is the
    common case (``_fastwalk``), else by bson's decoder and the Python walk. Both give the same result."""
    if _fastwalk is not None and _fast_settings(settings):
        objects = settings.max_object_keys
        cache = _KEY_CLASSES.setdefault(objects, {})
        walked = _fastwalk.walk(raw, _max_depth(settings), _classifier(objects), cache, _KEY_CLASS_LIMIT)
        # a document the previous incremental run loaded at its last cursor value is skipped by the Python walk
        if walked is not None and (not boundary or all(keys.isdisjoint(walked[0]) for keys in boundary.values())):
            batch = _batch_from_walk(*walked)
            if settings.cursor_path is not None:
                _add_cursor_ends(batch, raw, settings.cursor_path, walked[0])
            return batch
    return convert_documents(decode_batch(raw), settings, boundary)


def _add_cursor_ends(batch: ConvertedBatch, raw: bytes, cursor_path: FieldPath, keys: list[str]) -> None:
    """``cursor_ends`` as ``convert_documents`` sets them, decoding as few documents as it can: a batch whose first
    and last cursors share a type bracket lies within that bracket (the read is sorted), so only the documents
    that end it at its last value are decoded, from the end; a batch across brackets (rare: one per bracket
    boundary of the read) has every cursor decoded."""
    starts = []
    offset = 0
    while offset < len(raw):
        starts.append(offset)
        offset += int.from_bytes(raw[offset : offset + 4], "little")
    if not starts:
        return

    def cursor_at(number: int) -> Any:
        end = starts[number + 1] if number + 1 < len(starts) else len(raw)
        return get_path(bson.decode(raw[starts[number] : end], CODEC_OPTIONS), cursor_path)

    last = cursor_at(len(starts) - 1)
    if sort_bracket(cursor_at(0)) != sort_bracket(last):
        ends = _CursorEnds()
        for number in range(len(starts)):
            cursor = cursor_at(number)
            ends.add(cursor, identity(cursor), keys[number])
        batch.cursor_ends = ends.ends
        return
    last_identity = identity(last)
    at_last = [keys[-1]]
    for number in range(len(starts) - 2, -1, -1):
        if identity(cursor_at(number)) != last_identity:
            break
        at_last.append(keys[number])
    batch.cursor_ends = [CursorEnd(last, at_last[::-1])]


_KEY_CLASSES: dict[int, dict[tuple[str, ...], int]] = {}
"""Per ``max_object_keys``: a document's key tuple -> the flags ``_classifier``'s function gives it, kept by
``_fastwalk`` across batches."""
_KEY_CLASS_LIMIT = 10_000
_DATA_MAP, _REPEATED_KEY, _DBREF = 1, 2, 4


def _fast_settings(settings: ConversionSettings) -> bool:
    """Settings ``_fastwalk`` covers: keyed by ``_id``, no ``json_paths``."""
    return settings.key_paths == (("_id",),) and not settings.json_paths


def _max_depth(settings: ConversionSettings) -> int:
    return settings.max_table_nesting if settings.max_table_nesting is not None else 1 << 30


def _classifier(max_object_keys: int) -> Any:
    def classify(keys: tuple[str, ...]) -> int:
        """``_Walker.is_data_map``'s answer for a (sub-)document with these keys, plus whether a key repeats
        (the Python path fails that document: ``_decode_batch``) or is ``$ref``: ``_fastwalk`` leaves such a batch
        to the Python walk."""
        flags = _REPEATED_KEY if len(set(keys)) != len(keys) else 0
        if keys_are_data(keys, max_object_keys):
            flags |= _DATA_MAP
        if "$ref" in keys:  # bson decodes a sub-document with $ref and $id as a DBRef
            flags |= _DBREF
        return flags

    return classify


def _batch_from_walk(keys: list[str], tables: list[tuple[Any, ...]]) -> ConvertedBatch:
    built = {}
    for path, rows, slots, parent_rows, root_rows, list_index in tables:
        builder = _TableBuilder()
        builder.rows, builder.slots = rows, slots
        builder.parent_rows, builder.root_rows, builder.list_index = parent_rows, root_rows, list_index
        built[path] = builder.build(path == ())
    return ConvertedBatch(documents=len(keys), tables=built, keys=pa.array(keys, type=pa.string()))


def locate_conversion_error(
    raw: bytes,
    settings: ConversionSettings,
    boundary: Boundary | None,
    label: str,
    error: Exception,
) -> DocumentConversionError:
    """Converts the documents of ``raw`` one by one to name the first one (and its field) that fails."""
    offset = 0
    while offset + 4 <= len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        document = raw[offset : offset + length]
        offset += length
        try:
            convert_raw_batch(document, settings, boundary)
        except Exception as document_error:
            document_id, field_name = _locate_field(document, settings)
            return DocumentConversionError(
                f"{label}: document _id={document_id}, field {field_name!r}: "
                f"{type(document_error).__name__}: {document_error}"
            )
    return DocumentConversionError(f"{label}: a batch could not be converted: {type(error).__name__}: {error}")


def _locate_field(document: bytes, settings: ConversionSettings) -> tuple[str, str | None]:
    """The document's ``_id`` (Extended JSON, or ``?``) and the field that fails to convert: a repeated key's
    dotted path, else the first top-level field that fails."""
    document_id, failing = "?", None
    repeated, _ = inspect_batch(document)
    if repeated is not None:
        failing = ".".join(repeated[1])
    for _, key, element_start, _, end in element_spans(document, 0):
        element = document[element_start:end]
        wrapped = (len(element) + 5).to_bytes(4, "little") + element + b"\x00"
        try:
            convert_raw_batch(wrapped, settings)
        except Exception:  # the first failing field is what we report
            failing = failing or key
            continue
        if key == "_id" and document_id == "?":  # a repeated _id: its first value names the document
            document_id = extended_json(decode_keeping_symbols(wrapped, 0)["_id"])
    return document_id, failing


def _decimal_array(unscaled: list[int | None]) -> pa.Array:
    data = b"".join(
        _ZERO_DECIMAL if value is None else value.to_bytes(16, "little", signed=True) for value in unscaled
    )
    validity = pa.array([value is not None for value in unscaled], type=pa.bool_())
    return pa.Array.from_buffers(
        DECIMAL_TYPE, len(unscaled), [validity.buffers()[1], pa.py_buffer(data)], null_count=validity.false_count
    )


def _object_id_array(binaries: list[bytes | None]) -> pa.Array:
    """ObjectIds' 12 bytes as 24 lowercase hex characters, hex-encoded in one call for the whole column."""
    encoded = binascii.hexlify(b"".join(_ZERO_OBJECT_ID if value is None else value for value in binaries))
    validity = pa.array([value is not None for value in binaries], type=pa.bool_())
    hexes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(24), len(binaries), [validity.buffers()[1], pa.py_buffer(encoded)], null_count=validity.false_count
    )
    return hexes.cast(pa.string())


def random_row_ids(count: int) -> pa.Array:
    """``count`` random 16-character row ids (96 random bits, URL-safe base64), built without a Python loop."""
    encoded = base64.urlsafe_b64encode(os.urandom(12 * count))
    ids = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), count, [None, pa.py_buffer(encoded)])
    return ids.cast(pa.string())
