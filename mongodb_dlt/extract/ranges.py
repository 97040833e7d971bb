"""A snapshot read in ``_id`` ranges: the ranges' conditions, and their progress kept in dlt's resource state.

A collection read whole (``merge`` or ``append`` without ``incremental``) is read as a sequence of ``_id`` ranges,
each in ``_id`` order, and loaded in chunks: one load package per ``chunk_size``. Each package carries, in the
resource state dlt commits with its rows, how far every range got (the last ``_id`` read). A run killed at any
instant leaves the warehouse with the chunks that committed and their progress (the loader undoes the one in
flight); the next run reads on from there, so every document lands once. The run that reads a snapshot's last range
to its end removes the progress in that last package: the next run starts a new snapshot.

``_id`` may hold any BSON type but an array, and ``{_id: {$gt: v}}`` matches ``v``'s type bracket only, so a
range's condition is one per bracket (cursor.py's brackets, and null): ``$gt`` the range's start in its bracket,
``$lte`` its end in its bracket, every bracket in between whole. ``_id`` is unique and immutable, so a document
has one place in that order for the whole read: a document that exists for the whole snapshot is read exactly once,
however it is updated meanwhile. The state keeps each range as ``after`` (exclusive), ``until`` (inclusive) and
``last`` (the last ``_id`` read), as canonical Extended JSON, so a range can later be read by a process of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import bson
import pymongo
from bson.raw_bson import RawBSONDocument

from mongodb_dlt.extract.bson_arrow import CODEC_OPTIONS
from mongodb_dlt.extract.bson_types import BRACKET_MAX_KEY, BRACKET_MIN_KEY, BRACKET_NULL, sort_bracket
from mongodb_dlt.extract.cursor import (
    READ_BRACKETS,
    Bracket,
    decode_value,
    display_cursor,
    encode_value,
    is_nan,
    server_value,
)

_RAW_OPTIONS = CODEC_OPTIONS.with_options(document_class=RawBSONDocument)
STATE_KEY: Final = "snapshot"
"""The resource state's key for a snapshot in progress."""


class _Unbounded:
    """A range without a start or an end (``None`` is an ``_id`` value: null)."""

    def __repr__(self) -> str:
        return "UNBOUNDED"


UNBOUNDED: Final = _Unbounded()

# _id cannot be an array, a regular expression or undefined; it can be null (one document)
ID_BRACKETS: tuple[Bracket, ...] = tuple(
    sorted((Bracket(BRACKET_NULL, "null", {"$eq": None}, ranged=False), *READ_BRACKETS), key=lambda b: b.rank)
)


def _after(value: Any) -> dict[str, Any]:
    # MongoDB orders NaN below every number and matches it by equality only: after NaN come all the others
    return {"$gte": float("-inf")} if is_nan(value) else {"$gt": server_value(value)}


def between(after: Any, until: Any) -> list[dict[str, Any]] | None:
    """Conditions on ``_id``, one per type bracket (a document matching any of them is in the range), selecting
    ``after < _id <= until`` in MongoDB's order; ``UNBOUNDED`` leaves that side open. Both open: None, no condition;
    an empty list: nothing is left (after MaxKey)."""
    if after is UNBOUNDED and until is UNBOUNDED:
        return None
    low = BRACKET_MIN_KEY - 1 if after is UNBOUNDED else sort_bracket(after)
    high = BRACKET_MAX_KEY + 1 if until is UNBOUNDED else sort_bracket(until)
    found = []
    for bracket in ID_BRACKETS:
        if not low <= bracket.rank <= high:
            continue
        condition: dict[str, Any] = {}
        if bracket.rank == low:
            if not bracket.ranged:
                continue  # its one value (MinKey, null, MaxKey) is at or before the start
            condition.update(_after(after))
        if bracket.rank == high and bracket.ranged:
            condition["$lte"] = server_value(until)
        found.append(condition or dict(bracket.whole))
    return found


def batch_end(raw: bytes) -> tuple[int, Any]:
    """The documents in a server reply's BSON bytes (as ``find_raw_batches`` yields them), and the ``_id`` of its
    last one, decoded as the converter decodes it."""
    count, offset, last = 0, 0, 0
    while offset < len(raw):
        last = offset
        offset += int.from_bytes(raw[offset : offset + 4], "little")
        count += 1
    return count, RawBSONDocument(raw[last:offset], _RAW_OPTIONS)["_id"]


def _encode(value: Any) -> str | None:
    return None if value is UNBOUNDED else encode_value(value)


def _decode(text: str | None) -> Any:
    return UNBOUNDED if text is None else decode_value(text)


@dataclass
class IdRange:
    """One range of a snapshot and how far its reads got."""

    after: Any = UNBOUNDED
    """Exclusive start."""
    until: Any = UNBOUNDED
    """Inclusive end."""
    last: Any = UNBOUNDED
    """The last ``_id`` read and committed; the rest of the range starts after it."""
    done: bool = False
    documents: int = 0
    """Documents read in this range, over every chunk and run of the snapshot."""

    def rest(self) -> list[dict[str, Any]] | None:
        """The conditions on ``_id`` of what is left to read (``between``)."""
        return between(self.after if self.last is UNBOUNDED else self.last, self.until)

    def describe(self) -> str:
        def shown(value: Any) -> str:
            return "start" if value is UNBOUNDED else str(display_cursor(value))

        end = "end" if self.until is UNBOUNDED else str(display_cursor(self.until))
        where = "done" if self.done else f"read up to {shown(self.last)}" if self.last is not UNBOUNDED else "not read"
        return f"({shown(self.after)}, {end}]: {where}, {self.documents:,} documents"

    def to_state(self) -> dict[str, Any]:
        return {"after": _encode(self.after), "until": _encode(self.until), "last": _encode(self.last),
                "done": self.done, "documents": self.documents}

    @classmethod
    def from_state(cls, kept: Mapping[str, Any]) -> IdRange:
        return cls(_decode(kept.get("after")), _decode(kept.get("until")), _decode(kept.get("last")),
                   bool(kept.get("done")), int(kept.get("documents", 0)))


@dataclass
class Snapshot:
    """A snapshot in progress, as the resource state keeps it between its chunks and runs."""

    ranges: list[IdRange]
    started_at: str
    """When the snapshot's first chunk started (UTC, ISO 8601)."""
    first_load: bool
    """The warehouse held none of the collection's tables when the snapshot started: every chunk appends (the
    ranges are disjoint, so no document can come twice)."""
    operation_time: str | None = None
    """The cluster's operation time before the first range was read (canonical Extended JSON), where a change
    stream can start; None where the server keeps none (a standalone server)."""
    count_before: int | None = None
    """Documents matching the filter when the snapshot (or the first run that counted) started."""
    chunks: int = 0
    """Chunks committed, over every run."""
    documents: int = 0
    bytes: int = 0
    resumed: bool = False
    """Read from the state: an earlier run started it."""

    @classmethod
    def start(cls, first_load: bool, operation_time: Any) -> Snapshot:
        return cls(
            ranges=[IdRange()],
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            first_load=first_load,
            operation_time=None if operation_time is None else encode_value(operation_time),
        )

    @property
    def complete(self) -> bool:
        return all(id_range.done for id_range in self.ranges)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "ranges": [id_range.to_state() for id_range in self.ranges],
            "started_at": self.started_at,
            "first_load": self.first_load,
            "operation_time": self.operation_time,
            "count_before": self.count_before,
            "chunks": self.chunks,
            "documents": self.documents,
            "bytes": self.bytes,
        }

    @classmethod
    def from_state(cls, kept: Mapping[str, Any]) -> Snapshot:
        return cls(
            ranges=[IdRange.from_state(id_range) for id_range in kept["ranges"]],
            started_at=str(kept["started_at"]),
            first_load=bool(kept["first_load"]),
            operation_time=kept.get("operation_time"),
            count_before=kept.get("count_before"),
            chunks=int(kept.get("chunks", 0)),
            documents=int(kept.get("documents", 0)),
            bytes=int(kept.get("bytes", 0)),
            resumed=True,
        )

    def save(self, resource_state: dict[str, Any]) -> None:
        """Into the state the next package commits: the progress, or nothing once every range is done."""
        if self.complete:
            resource_state.pop(STATE_KEY, None)
        else:
            resource_state[STATE_KEY] = self.to_state()


def in_progress(pipeline_state: Mapping[str, Any], resource_name: str) -> Snapshot | None:
    """The snapshot a pipeline's state holds in progress for a resource, or None."""
    for source_state in pipeline_state.get("sources", {}).values():
        kept = source_state.get("resources", {}).get(resource_name, {}).get(STATE_KEY)
        if kept is not None:
            return Snapshot.from_state(kept)
    return None


def operation_time(client: Any) -> Any:
    """The cluster's operation time now (a ``Timestamp``), or None where the server reports none."""
    try:
        with client.start_session() as session:
            client.admin.command("ping", session=session)
            return session.operation_time
    except (AttributeError, NotImplementedError, bson.errors.BSONError, pymongo.errors.ConfigurationError):
        return None  # a client without sessions (mongomock), or a server without them
