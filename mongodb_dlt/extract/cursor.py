"""The incremental cursor: the only owner of its state layout in dlt's resource state.

MongoDB's ``$gt``/``$gte`` match values of the operand's type bracket only (numbers, strings, dates, ObjectIds...),
and a sort on a field orders the brackets one after the other. So the cursor keeps a position per bracket, and a
run reads, in one query sorted on the cursor, every bracket from its own position: ``$gte`` the last value read
there, or the whole bracket when none was read yet (from ``initial_value`` in that value's own bracket). A field
that holds integers and strings, or dates and a few strings, is read whole, whatever was read first.

The state (committed with each load, so it moves with the warehouse) holds, per cursor field:

- ``last_value``: readable (ISO dates, hex ObjectIds), where the last run's sort ended, for people and metadata;
- ``brackets``: per bracket read (named by MongoDB's ``$type`` alias), its ``last_value``, ``last_value_bson``
  (the same value as canonical Extended JSON, so its BSON type survives for the next query) and
  ``keys_at_last_value``, the documents already loaded at that value: the next run reads ``$gte`` it and skips
  exactly those, so a boundary document is never loaded twice, even with ``append``.

Not read: null and a missing field (no position to keep), regular expressions (MongoDB cannot select them by range).
An array fails the collection when a read meets it: MongoDB matches an array by each element and sorts it by its
smallest, so it has no position of its own.

Older layouts are read and rewritten: one ``last_value_bson`` with its keys (version 1.1), or ``last_value`` alone
(version 1.0, dlt's incremental). That value becomes its bracket's position; higher brackets, which those versions
never read after their first run, are read whole; lower ones are read whole under ``merge`` (reading a document
again changes nothing), and under ``append`` start at their newest document now (it may have been loaded).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson import Code, Decimal128, MaxKey, MinKey, ObjectId, Timestamp, json_util
from bson.codec_options import CodecOptions
from pymongo.collection import Collection

from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract import mongo
from mongodb_dlt.extract.bson_arrow import CODEC_OPTIONS, ConvertedBatch, CursorEnd, extended_json, identity
from mongodb_dlt.extract.bson_types import (
    BRACKET_BINARY,
    BRACKET_BOOL,
    BRACKET_CODE,
    BRACKET_CODE_WITH_SCOPE,
    BRACKET_DATE,
    BRACKET_MAX_KEY,
    BRACKET_MIN_KEY,
    BRACKET_NUMBER,
    BRACKET_OBJECT,
    BRACKET_OBJECT_ID,
    BRACKET_STRING,
    BRACKET_TIMESTAMP,
    FieldPath,
    composite_identity,
    get_path,
    sort_bracket,
)
from mongodb_dlt.results import JSON_TAG

logger = logging.getLogger(__name__)

_HEX_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_DISPLAY_DATES: CodecOptions[Any] = CodecOptions(tz_aware=True, tzinfo=UTC)
# cursor values kept in the state decode to exactly the types the converter sees (DatetimeMS, Binary)
_CURSOR_JSON = json_util.CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=CODEC_OPTIONS.datetime_conversion, uuid_representation=CODEC_OPTIONS.uuid_representation
)


@dataclass(frozen=True)
class Bracket:
    """A type bracket an incremental read selects: its rank in MongoDB's order, its ``$type`` alias (the name in
    the state and in messages), and the condition that selects all of it."""

    rank: int
    name: str
    whole: Mapping[str, Any]
    ranged: bool = True
    """False for MinKey and MaxKey, single values: always read whole (the boundary keys skip those loaded)."""


# $type where it selects the bracket exactly; elsewhere $gte the bracket's least value (strings: $type "string"
# would leave symbols, of the same bracket, out; mongomock, our tests' stand-in, knows no other $type aliases).
READ_BRACKETS: tuple[Bracket, ...] = (
    Bracket(BRACKET_MIN_KEY, "minKey", {"$eq": MinKey()}, ranged=False),
    Bracket(BRACKET_NUMBER, "number", {"$type": "number"}),
    Bracket(BRACKET_STRING, "string", {"$gte": ""}),
    Bracket(BRACKET_OBJECT, "object", {"$type": "object"}),
    Bracket(BRACKET_BINARY, "binData", {"$type": "binData"}),
    Bracket(BRACKET_OBJECT_ID, "objectId", {"$type": "objectId"}),
    Bracket(BRACKET_BOOL, "bool", {"$type": "bool"}),
    Bracket(BRACKET_DATE, "date", {"$type": "date"}),
    Bracket(BRACKET_TIMESTAMP, "timestamp", {"$gte": Timestamp(0, 0)}),
    Bracket(BRACKET_CODE, "javascript", {"$gte": Code("")}),
    Bracket(BRACKET_CODE_WITH_SCOPE, "javascriptWithScope", {"$gte": Code("", {})}),
    Bracket(BRACKET_MAX_KEY, "maxKey", {"$eq": MaxKey()}, ranged=False),
)
"""Every bracket a read selects, in MongoDB's order. Null (and a missing field), arrays and regular expressions are
not among them."""
_BY_RANK = {bracket.rank: bracket for bracket in READ_BRACKETS}
_BY_NAME = {bracket.name: bracket for bracket in READ_BRACKETS}


def encode_value(value: Any) -> str:
    """A BSON value as the state keeps it: canonical Extended JSON, so its type survives."""
    return json_util.dumps(value, json_options=_CURSOR_JSON)


def decode_value(text: str) -> Any:
    """A value kept by ``encode_value``, decoded as the converter decodes documents (DatetimeMS, Binary)."""
    return json_util.loads(text, json_options=_CURSOR_JSON)


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


def server_value(value: Any) -> Any:
    """A kept cursor value as the client sends it: a date as a datetime where Python can hold it (both encode to
    the same BSON date)."""
    if isinstance(value, bson.datetime_ms.DatetimeMS):
        try:
            return value.as_datetime(_DISPLAY_DATES)
        except (OverflowError, ValueError):
            return value
    return value


def is_nan(value: Any) -> bool:
    # MongoDB sorts NaN below every number, but {$gte: NaN} matches NaN alone: after NaN, read all numbers
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, Decimal128) and value.to_decimal().is_nan()


def _on_path(path: FieldPath, cursor_path: FieldPath) -> bool:
    return cursor_path[: len(path)] == path


def _holds_array(value: Any, rest: FieldPath) -> bool:
    for key in rest:
        if isinstance(value, list):
            return True
        if not isinstance(value, dict):
            return False
        value = value.get(key)
    return isinstance(value, list)


def _key_of_array(batch: ConvertedBatch, cursor_path: FieldPath) -> str | None:
    """The key of a document of ``batch`` whose cursor path meets an array, or None. Read from the converted
    tables, not from the documents: an array on the path is a child table, or JSON text in the root table."""
    for table_path, table in batch.tables.items():
        if table_path and table.rows and table.root_rows is not None and _on_path(table_path[0], cursor_path):
            return str(batch.keys[table.root_rows[0].as_py()].as_py())
    root = batch.tables.get(())
    if root is None:
        return None
    for (field_path, tag), column in root.columns.items():
        if tag == JSON_TAG and _on_path(field_path, cursor_path):
            for row, text in enumerate(column.to_pylist()):
                if text is not None and _holds_array(json.loads(text), cursor_path[len(field_path) :]):
                    return str(batch.keys[row].as_py())
    return None


@dataclass
class _Position:
    """Where the reads of one bracket have got to: the last value read and the keys of the documents at it."""

    value: Any
    keys: set[str] = field(default_factory=set)

    @property
    def identity(self) -> str:
        return identity(self.value)


@dataclass
class CursorState:
    """An incremental cursor kept in dlt's resource state: a position per type bracket."""

    state: dict[str, Any]
    field: str
    label: str
    positions: dict[int, _Position] = field(default_factory=dict)
    """Per bracket rank: where the last run ended, then advanced by this run's batches."""
    previous: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per position the last run ended at (its identity): the keys loaded there, skipped by this run."""
    older_layout: tuple[Any, list[str], bool] | None = None
    """State written before brackets: its value, its keys, and whether version 1.0 (dlt's incremental) wrote it."""

    @property
    def path(self) -> FieldPath:
        return tuple(self.field.split("."))

    @classmethod
    def load(cls, resource_state: dict[str, Any], cursor_field: str, label: str) -> CursorState:
        state = resource_state.setdefault("incremental", {}).setdefault(cursor_field, {})
        cursor = cls(state, cursor_field, label)
        if "brackets" in state:
            for name, kept in state["brackets"].items():
                value = decode_value(kept["last_value_bson"])
                cursor.positions[_BY_NAME[name].rank] = _Position(value, set(kept.get("keys_at_last_value", [])))
        elif "last_value_bson" in state:
            value = decode_value(state["last_value_bson"])
            cursor.older_layout = (value, list(state.get("keys_at_last_value", [])), False)
        elif state.get("last_value") is not None:
            cursor.older_layout = (state["last_value"], [], True)
        cursor.previous = {position.identity: frozenset(position.keys) for position in cursor.positions.values()}
        return cursor

    def conditions(
        self, collection: Collection, initial_value: Any, *, merges: bool, key_paths: Sequence[FieldPath]
    ) -> list[dict[str, Any]]:
        """The conditions on the cursor field, one per bracket (any of them selects a document): ``$gte`` the
        bracket's position, else ``$gte`` ``initial_value`` in its own bracket, else the whole bracket. State in an
        older layout is migrated first (see the module's docstring)."""
        if self.older_layout is not None:
            self._migrate(collection, merges, key_paths)
        start = None if initial_value is None else _initial_server_value(initial_value, collection, self.field)
        found = []
        for bracket in READ_BRACKETS:
            position = self.positions.get(bracket.rank)
            value = position.value if position is not None else None
            if value is None and start is not None and sort_bracket(start) == bracket.rank:
                value = start
            if value is None or not bracket.ranged or is_nan(value):
                found.append(dict(bracket.whole))
            else:
                found.append({"$gte": server_value(value)})
        return found

    def _migrate(self, collection: Collection, merges: bool, key_paths: Sequence[FieldPath]) -> None:
        value, keys, legacy = self.older_layout  # type: ignore[misc]  # checked by the caller
        self.older_layout = None
        if legacy:
            value = _initial_server_value(value, collection, self.field)
        rank = sort_bracket(value)
        if rank not in _BY_RANK:
            # an array or a regular expression: no position a read can start from (the earlier version could not
            # read on from it either)
            logger.warning(
                "%s: the incremental state of %r holds %s, which no read can start after: reading every document",
                self.label,
                self.field,
                display_cursor(value),
            )
            return
        self.positions[rank] = _Position(value, set(keys))
        self.previous[identity(value)] = frozenset(keys)
        if merges:
            return
        for bracket in READ_BRACKETS:
            if bracket.rank >= rank:
                break
            newest = self._read(collection, {self.field: bracket.whole}, sort=[(self.field, -1)], limit=1)
            if not newest:
                continue
            top = get_path(newest[0], self.path)
            at_top = self._read(collection, {self.field: server_value(top)}, sort=None, limit=0)
            top_keys = {composite_identity(document, key_paths) for document in at_top}
            self.positions[bracket.rank] = _Position(top, top_keys)
            self.previous[identity(top)] = frozenset(top_keys)
            logger.warning(
                "%s: the incremental state of %r, written by an earlier version, holds one last value (%s, a %s); "
                "that version read values of type %s only on its first run, so with append this run starts after "
                "the newest of them (%s) to load none twice: any it missed in between are not loaded",
                self.label,
                self.field,
                display_cursor(value),
                _BY_RANK[rank].name,
                bracket.name,
                display_cursor(top),
            )

    def _read(self, collection: Collection, query: dict[str, Any], *, sort: Any, limit: int) -> list[dict[str, Any]]:
        """Documents decoded as the converter decodes them, so their cursor values and keys compare alike."""
        found = []
        options: dict[str, Any] = {"batch_size": 1000, "limit": limit}
        if sort is not None:
            options["sort"] = sort
        for raw in mongo.raw_batches(collection, query, **options):
            found.extend(bson.decode_all(raw, CODEC_OPTIONS))
        return found

    def boundary(self) -> dict[str, frozenset[str]]:
        """The positions the last run ended at (identity) and the keys it loaded there: skipped by the walk."""
        return self.previous

    def advance(self, batch: ConvertedBatch) -> None:
        """Moves each bracket's position to where ``batch`` ends in it; fails on a document whose cursor is an
        array."""
        if batch.documents == 0:
            return
        array_key = _key_of_array(batch, self.path)
        if array_key is not None:
            raise DocumentConversionError(
                f"{self.label}: document with key {array_key} holds an array in incremental cursor_field "
                f"{self.field!r}: MongoDB matches an array by each of its elements and sorts it by its smallest, so "
                "it has no place after a last value and documents could be skipped or read twice. Read it with a "
                f"cursor_field holding single values, or leave such documents out with filter: {{{self.field}: "
                "{$not: {$type: array}}}"
            )
        for end in batch.cursor_ends:
            self._advance_to(end)

    def _advance_to(self, end: CursorEnd) -> None:
        rank = sort_bracket(end.value)
        position = self.positions.get(rank)
        if position is not None and position.identity == identity(end.value):
            position.keys.update(end.keys)
        else:
            self.positions[rank] = _Position(end.value, set(end.keys))

    def save(self) -> None:
        if not self.positions:
            return
        brackets = {}
        for rank in sorted(self.positions):
            position = self.positions[rank]
            brackets[_BY_RANK[rank].name] = {
                "last_value": display_cursor(position.value),
                "last_value_bson": encode_value(position.value),
                "keys_at_last_value": sorted(position.keys),
            }
        self.state.pop("last_value_bson", None)
        self.state.pop("keys_at_last_value", None)
        self.state["last_value"] = display_cursor(self.positions[max(self.positions)].value)
        self.state["brackets"] = brackets


def last_value(pipeline_state: Mapping[str, Any], resource_name: str, cursor_field: str) -> Any:
    """The readable ``last_value`` a pipeline's state holds for a resource's cursor, or None."""
    for source_state in pipeline_state.get("sources", {}).values():
        incremental = source_state.get("resources", {}).get(resource_name, {}).get("incremental", {})
        if cursor_field in incremental:
            return incremental[cursor_field].get("last_value")
    return None
