"""The incremental cursor: the only owner of its state layout in dlt's resource state.

The state (committed with each load, so it moves with the warehouse) holds, per cursor field:

- ``last_value``: the last cursor value, readable (ISO dates, hex ObjectIds), for people and metadata;
- ``last_value_bson``: the same value as canonical Extended JSON, so its BSON type survives for the next query;
- ``keys_at_last_value``: the documents already loaded at that value. The next run reads ``$gte`` the last value
  and skips exactly those, so a boundary document is never loaded twice, even with ``append``.

State written by version 1.0 (dlt's own incremental) holds ``last_value`` only; it is read once and rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson import ObjectId, json_util
from bson.codec_options import CodecOptions
from pymongo.collection import Collection

from mongodb_dlt.extract.bson_arrow import CODEC_OPTIONS, ConvertedBatch, extended_json, identity

_HEX_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_DISPLAY_DATES: CodecOptions[Any] = CodecOptions(tz_aware=True, tzinfo=UTC)
# cursor values kept in the state decode to exactly the types the converter sees (DatetimeMS, Binary)
_CURSOR_JSON = json_util.CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=CODEC_OPTIONS.datetime_conversion, uuid_representation=CODEC_OPTIONS.uuid_representation
)


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


@dataclass
class CursorState:
    """An incremental cursor kept in dlt's resource state: ``last_value`` for people (ISO dates), and
    ``last_value_bson`` (canonical Extended JSON) plus ``keys_at_last_value`` for the next run."""

    state: dict[str, Any]
    field: str
    last_value: Any = None
    last_identity: str | None = None
    keys: list[str] = field(default_factory=list)
    previous_identity: str | None = None
    previous_keys: frozenset[str] = frozenset()
    legacy: bool = False
    """The state was written by version 1.0 (dlt's incremental): ``last_value`` only, in its converted form."""

    @classmethod
    def load(cls, resource_state: dict[str, Any], cursor_field: str) -> CursorState:
        state = resource_state.setdefault("incremental", {}).setdefault(cursor_field, {})
        cursor = cls(state, cursor_field)
        if "last_value_bson" in state:
            cursor.last_value = json_util.loads(state["last_value_bson"], json_options=_CURSOR_JSON)
            cursor.last_identity = cursor.previous_identity = identity(cursor.last_value)
            cursor.keys = list(state.get("keys_at_last_value", []))
            cursor.previous_keys = frozenset(cursor.keys)
        elif state.get("last_value") is not None:
            cursor.last_value, cursor.last_identity, cursor.legacy = state["last_value"], "legacy", True
        return cursor

    def start_value(self, collection: Collection, initial_value: Any) -> Any:
        """The BSON value to read from (``$gte``): the last value kept, else the configured ``initial_value``, else
        None (a first run without one reads every document holding the cursor). A date is handed to the client as
        a datetime where Python can hold it: both encode to the same BSON date."""
        if self.last_identity is None:
            return None if initial_value is None else _initial_server_value(initial_value, collection, self.field)
        if self.legacy:
            return _initial_server_value(self.last_value, collection, self.field)
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


def last_value(pipeline_state: Mapping[str, Any], resource_name: str, cursor_field: str) -> Any:
    """The readable ``last_value`` a pipeline's state holds for a resource's cursor, or None."""
    for source_state in pipeline_state.get("sources", {}).values():
        incremental = source_state.get("resources", {}).get(resource_name, {}).get("incremental", {})
        if cursor_field in incremental:
            return incremental[cursor_field].get("last_value")
    return None
