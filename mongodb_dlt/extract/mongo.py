"""The MongoDB side of a read: connecting, pinging, the query and projection sent, raw BSON batches, counts.

Only pymongo lives here (mongomock stands in for it in unit tests): what comes back is bytes, decoded elsewhere.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
import pymongo
from bson import ObjectId
from pymongo.collection import Collection

from mongodb_dlt.errors import MongoUnreachableError, mask_secrets, mask_url

DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000
"""How long pymongo looks for a usable server before failing, unless the connection URL sets its own."""


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


def projection(
    configured: Sequence[str] | Mapping[str, Any] | None, required: Iterable[str]
) -> dict[str, Any] | None:
    """The projection sent: a list of fields gets the ``required`` ones added whole; a projection document is sent
    as the user wrote it (validation refuses one that drops a required field); None reads every field."""
    if configured is None:
        return None
    if isinstance(configured, Mapping):
        return dict(configured)
    fields = list(configured)
    for field_name in required:
        if any(field_name == f or field_name.startswith(f"{f}.") for f in fields):
            continue  # listed, or inside a listed field
        # a listed part of it would leave the rest out (and MongoDB rejects projecting a field and its child)
        fields = [f for f in fields if not f.startswith(f"{field_name}.")]
        fields.append(field_name)
    return dict.fromkeys(fields, 1)


@dataclass(frozen=True)
class Window:
    """One partition's read: the documents whose ``field`` is ``$gte`` ``start`` and ``$lt`` ``end``. The bounds are
    BSON dates, or ObjectIds made from the window's times for ``_id`` (``ObjectId.from_datetime``: the smallest
    ObjectId of that second), so the range matches that one type bracket only, as MongoDB compares."""

    key: str
    """The Dagster partition key; every row the read writes carries it (columns.PARTITION)."""
    field: str
    start: Any
    end: Any
    first_start: Any
    """The first window's start: a document whose field is not ``$gte`` it is in no window, now or later."""

    @classmethod
    def of(cls, key: str, field: str, start: dt.datetime, end: dt.datetime, first_start: dt.datetime) -> Window:
        bound = ObjectId.from_datetime if field == "_id" else _utc
        return cls(key, field, bound(start), bound(end), bound(first_start))

    def condition(self) -> dict[str, Any]:
        return {self.field: {"$gte": self.start, "$lt": self.end}}

    def outside(self) -> dict[str, Any]:
        """Matches what no window holds: before the first window, without the field, null, or of another type
        (``$gte`` compares within one type bracket; ``$not`` matches all the rest)."""
        return {self.field: {"$not": {"$gte": self.first_start}}}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def query(
    user_filter: Mapping[str, Any] | None,
    cursor_field: str | None,
    cursor_conditions: Sequence[Mapping[str, Any]],
    window: Window | None = None,
) -> dict[str, Any]:
    """The user's filter, and conditions on one field, one per type bracket: an incremental read's cursor
    (``cursor.CursorState``), or ``_id`` for a range of a snapshot (``ranges.between``). A document matching any of
    them is read; none: the filter alone. A partition's read is its window instead (partitions are not chunked)."""
    found = dict(user_filter or {})
    if window is not None:
        return {"$and": [found, window.condition()]} if found else window.condition()
    if cursor_field is None or not cursor_conditions:
        return found
    conditions = [{cursor_field: condition} for condition in cursor_conditions]
    # an $or of ranges on one field: each uses the field's index, and their sorted results merge (SORT_MERGE)
    condition = conditions[0] if len(conditions) == 1 else {"$or": conditions}
    return {"$and": [found, condition]} if found else condition


def raw_batches(source: Collection, query: Mapping[str, Any], **find: Any) -> Iterator[bytes]:
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


def count(source: Collection, query: Mapping[str, Any], **options: Any) -> int | str:
    """``count_documents(query, **options)``, or why the server cannot count it (``$where``, ``$near``): that is
    noted, not raised, since the read itself takes the query. Transient errors are raised, to be retried with the
    read."""
    try:
        return int(source.count_documents(query, **options))
    except pymongo.errors.OperationFailure as error:
        if isinstance(error, pymongo.errors.ExecutionTimeout):
            raise
        return mask_secrets(f"{type(error).__name__}: {_FULL_ERROR.split(str(error), maxsplit=1)[0]}")


def estimated_count(source: Collection) -> int | None:
    """MongoDB's estimate of the collection's documents, from its metadata (no scan); None when it gives none."""
    try:
        return int(source.estimated_document_count())
    except (pymongo.errors.OperationFailure, NotImplementedError):
        return None
