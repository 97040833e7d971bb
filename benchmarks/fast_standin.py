"""A fast, read-only MongoDB wire-protocol server for benchmarks only (not a test tool: see mongodb_dlt.testing).

It holds pre-encoded BSON documents in memory and answers the few commands a reader needs, embedding the stored
bytes directly in its replies, so serving a document costs almost nothing next to reading it. Collections of
database ``--database`` (default ``bench``), all views of one deterministic sequence of ~700-byte orders:

- ``orders``: the first ``--documents`` documents;
- ``orders_small``: the first ``--small`` documents;
- ``orders_incremental``: the first ``--documents`` documents, until a ``benchSetCount`` command grows it (up to
  ``--capacity``, default ``--documents`` + 1 %); document ``i`` is the same bytes in every run and collection.

Every document has ``_id`` (ObjectId), ``seq`` (int) and ``created_at`` (date), all increasing with the stored
order, so ``find`` answers a sort on any of them ascending, and a filter ``{}``, ``{f: {$gte|$gt|$lt|$lte: v}}``,
``{f: {$ne: null}}``, ``{f: {$exists: true}}``, ``{$and: [...]}`` of those, or an incremental read's ``{$or: [...]}``
of one condition per BSON type bracket (``$type``, ``$eq``, or a comparison with a value of another type: all
match nothing but the stored type's), by binary search; a projection
only when it keeps every field (pymongoarrow sends one). Anything else gets an error reply instead of a wrong
answer.

Protocol: OP_MSG (2013) and the legacy OP_QUERY (2004) handshake, answered with OP_REPLY. Commands: hello /
isMaster, ping, buildInfo, endSessions, listCollections, count (``{}`` or the filters above), find, getMore,
killCursors, and ``benchSetCount`` / ``benchStats`` (this benchmark's own: resize a collection; documents served).

    python benchmarks/fast_standin.py --documents 200000 [--small 2000] [--port 0]

prints ``mongodb://127.0.0.1:PORT/`` once the data is ready, and exits when its standard input closes (the parent
went away), after ``--lifetime`` seconds, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import itertools
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
_CHECKSUM_PRESENT = 1
_MORE_TO_COME = 1 << 1
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
DEFAULT_FIRST_BATCH = 101
_BATCH_BYTES = MAX_BSON_OBJECT_SIZE - 64 * 1024
_HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_ORDERED_FIELDS = ("_id", "seq", "created_at")

BASE_SECONDS = 1_700_000_000
BASE_DATE = datetime.datetime(2024, 1, 1)
STATUSES = ("new", "paid", "packed", "shipped", "delivered")
CITIES = ("Lyon", "Porto", "Austin", "Osaka", "Leeds", "Turin", "Quebec", "Perth", "Bergen", "Cusco", "Dakar")
COUNTRIES = ("FR", "PT", "US", "JP", "GB", "IT", "CA", "AU", "NO", "PE", "SN")
STREETS = ("Main St", "Rue de la Paix", "Harbour Rd", "Station Ave", "Mill Lane", "Via Roma", "King St")
FIRST_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia")
LAST_NAMES = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Dijkstra")
TAGS = ("gift", "express", "fragile", "bulk", "promo", "repeat", "vip", "eco", "weekend", "b2b", "export")
_NOTE_TEXT = (
    "customer asked for delivery after six in the evening, leave the parcel with the neighbour at number "
    "twelve if nobody answers; the invoice goes to the accounting address and the warranty card stays in "
    "the box; call ahead for the gate code, the driveway is narrow and the dog is friendly but loud; "
    "repack anything that rattles, wrap the glass items twice, and mark the carton this side up. "
) * 2


def _mix(i: int, salt: int) -> int:
    """A cheap deterministic scramble of ``i`` (Knuth's multiplicative hash)."""
    return ((i + 1) * 2654435761 + salt * 40503) % 4294967296


def make_document(i: int) -> dict[str, Any]:
    """Order ``i``: the same dict for the same ``i`` in every run; ~700 bytes of BSON."""
    h = _mix(i, 1)
    first, last = FIRST_NAMES[h % len(FIRST_NAMES)], LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
    city = (h >> 16) % len(CITIES)
    items = []
    for j in range(3):
        k = _mix(i, j + 2)
        items.append({"sku": f"SKU-{k % 100000:05d}", "qty": 1 + k % 9, "price": (k % 20000) / 100 + 0.99})
    total_cents = sum(int(item["qty"] * item["price"] * 100) for item in items)
    start = (h >> 4) % (len(_NOTE_TEXT) // 2)
    note = _NOTE_TEXT[start:start + 175 + (h >> 7) % 80]
    return {
        "_id": ObjectId(struct.pack(">IQ", BASE_SECONDS + i // 1000, i)),
        "seq": i + 1,
        "status": STATUSES[h % len(STATUSES)],
        "created_at": BASE_DATE + datetime.timedelta(seconds=i),
        "customer": {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{h % 1000}@example.com",
            "address": {
                "street": f"{1 + h % 250} {STREETS[(h >> 12) % len(STREETS)]}",
                "city": CITIES[city],
                "zip": f"{(h >> 3) % 100000:05d}",
                "country": COUNTRIES[city],
            },
        },
        "items": items,
        "tags": [TAGS[(h >> shift) % len(TAGS)] for shift in (2, 9, 17)],
        "total": Decimal128(f"{total_cents // 100}.{total_cents % 100:02d}"),
        "note": note,
    }


def _leaf_paths(value: Any, prefix: str = "") -> set[str]:
    """Dotted paths of a document's leaves, through arrays of documents (``items.sku``)."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return set().union(*(_leaf_paths(item, prefix) for item in value))
    if isinstance(value, dict):
        return set().union(*(_leaf_paths(child, f"{prefix}{key}.") for key, child in value.items()))
    return {prefix[:-1]}


LEAF_PATHS = frozenset(_leaf_paths(make_document(0)))


def _keeps_every_field(projection: dict[str, Any] | None) -> bool:
    """No projection, or one that includes every field the orders have (pymongoarrow sends its schema's leaf
    paths): the stored bytes answer both."""
    if not projection:
        return True
    if not all(value in (1, True) for value in projection.values()):
        return False
    return all(any(leaf == key or leaf.startswith(key + ".") for key in projection) for leaf in LEAF_PATHS)


@dataclass
class Collection:
    """A view of the first ``count`` stored documents."""

    count: int
    served: int = 0
    served_bytes: int = 0
    finds: list[dict[str, Any]] = field(default_factory=list)


class Store:
    """The encoded documents, the sort keys that make filters binary searches, and the collections."""

    def __init__(self, database: str, documents: int, small: int, capacity: int) -> None:
        self.database = database
        self.documents: list[bytes] = []
        self.keys: dict[str, list[Any]] = {name: [] for name in _ORDERED_FIELDS}
        for i in range(capacity):
            document = make_document(i)
            self.documents.append(bson.encode(document))
            for name in _ORDERED_FIELDS:
                self.keys[name].append(document[name])
        self.collections = {
            "orders": Collection(documents),
            "orders_small": Collection(min(small, capacity)),
            "orders_incremental": Collection(documents),
        }
        self.lock = threading.Lock()

    def collection(self, database: str, name: str) -> Collection:
        if database != self.database or name not in self.collections:
            return Collection(0)
        return self.collections[name]


class CommandError(Exception):
    def __init__(self, message: str, code: int = 2, code_name: str = "BadValue") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


class _OtherBracket(CommandError):
    """A comparison with a value of another BSON type bracket than the stored one's: MongoDB matches nothing."""


# $type aliases of the stored fields' types (seq int, created_at date, _id ObjectId)
_TYPE_ALIASES = {int: "number", datetime.datetime: "date", ObjectId: "objectId"}


def _branch_range(store: Store, collection: Collection, branch: dict[str, Any]) -> tuple[int, int]:
    """``[start, stop)`` of one branch of an ``$or``; empty when it selects another type bracket."""
    ((name, condition),) = branch.items()
    ((operator, value),) = condition.items() if isinstance(condition, dict) else (("$eq", condition),)
    if name not in store.keys:
        raise CommandError(f"fast stand-in: unsupported filter {branch!r}")
    if operator == "$type":
        return (0, collection.count) if _TYPE_ALIASES.get(type(store.keys[name][0])) == value else (0, 0)
    if operator == "$eq" and type(value) is not type(store.keys[name][0]):
        return 0, 0
    try:
        return _range_for(store, collection, branch)
    except _OtherBracket:
        return 0, 0


def _range_for(store: Store, collection: Collection, query: dict[str, Any]) -> tuple[int, int]:
    """``[start, stop)`` of the stored documents matching ``query``."""
    start, stop = 0, collection.count
    conditions: list[tuple[str, Any]] = []
    or_ranges: list[tuple[int, int]] = []

    def collect(part: dict[str, Any]) -> None:
        for key, value in part.items():
            if key == "$and":
                for item in value:
                    collect(item)
            elif key == "$or":
                found = [_branch_range(store, collection, item) for item in value]
                ranges = [(begin, end) for begin, end in found if begin < end]
                if len(ranges) > 1:
                    raise CommandError(f"fast stand-in: an $or matching in several branches {part!r}")
                or_ranges.append(ranges[0] if ranges else (0, 0))
            elif key in store.keys and isinstance(value, dict):
                conditions.extend((key, item) for item in value.items())
            else:
                raise CommandError(f"fast stand-in: unsupported filter {part!r}")

    collect(query)
    for or_start, or_stop in or_ranges:
        start, stop = max(start, or_start), min(stop, or_stop)
    for name, (operator, value) in conditions:
        keys = store.keys[name]
        try:
            if operator == "$gte":
                start = max(start, bisect.bisect_left(keys, value, 0, collection.count))
            elif operator == "$gt":
                start = max(start, bisect.bisect_right(keys, value, 0, collection.count))
            elif operator == "$lt":
                stop = min(stop, bisect.bisect_left(keys, value, 0, collection.count))
            elif operator == "$lte":
                stop = min(stop, bisect.bisect_right(keys, value, 0, collection.count))
            elif (operator == "$ne" and value is None) or (operator == "$exists" and value):
                pass  # every stored document has every ordered field
            else:
                raise CommandError(f"fast stand-in: unsupported operator {operator!r} on {name!r}")
        except TypeError as error:  # a value of another BSON type than the stored one
            raise _OtherBracket(f"fast stand-in: cannot compare {name!r} with {value!r}") from error
    return start, max(start, stop)


# -- building replies by hand ---------------------------------------------------------------------------------

_ARRAY_KEYS: list[bytes] = []


def _array_keys(count: int) -> list[bytes]:
    while len(_ARRAY_KEYS) < count:
        _ARRAY_KEYS.append(b"\x03" + str(len(_ARRAY_KEYS)).encode() + b"\x00")
    return _ARRAY_KEYS[:count]


def _document(elements: bytes) -> bytes:
    return _INT32.pack(len(elements) + 5) + elements + b"\x00"


def _cursor_reply(batch_name: str, documents: list[bytes], cursor_id: int, ns: str) -> bytes:
    parts: list[bytes] = [b""] * (2 * len(documents))
    parts[0::2] = _array_keys(len(documents))
    parts[1::2] = documents
    ns_bytes = ns.encode()
    cursor = _document(
        b"\x04" + batch_name.encode() + b"\x00" + _document(b"".join(parts))
        + b"\x12id\x00" + struct.pack("<q", cursor_id)
        + b"\x02ns\x00" + _INT32.pack(len(ns_bytes) + 1) + ns_bytes + b"\x00"
    )
    return _document(b"\x03cursor\x00" + cursor + b"\x01ok\x00" + struct.pack("<d", 1.0))


@dataclass
class Cursor:
    collection: Collection
    ns: str
    position: int
    stop: int


class Server:
    """The command handlers over one ``Store``; shared by every connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cursors: dict[int, Cursor] = {}
        self.cursor_ids = itertools.count(1)
        self.connection_ids = itertools.count(1)
        self.handlers: dict[str, Callable[[dict[str, Any], str], bytes | dict[str, Any]]] = {
            "hello": self.hello,
            "ismaster": self.hello,
            "ping": lambda command, db: {"ok": 1.0},
            "buildinfo": lambda command, db: {"version": "7.0.0", "versionArray": [7, 0, 0, 0], "ok": 1.0},
            "endsessions": lambda command, db: {"ok": 1.0},
            "listcollections": self.list_collections,
            "count": self.count,
            "find": self.find,
            "getmore": self.get_more,
            "killcursors": self.kill_cursors,
            "benchsetcount": self.set_count,
            "benchstats": self.stats,
        }

    def run(self, command: dict[str, Any]) -> bytes:
        name = next(iter(command), "")
        database = command.get("$db", "admin")
        handler = self.handlers.get(name.lower())
        try:
            if handler is None:
                raise CommandError(f"no such command: '{name}'", 59, "CommandNotFound")
            reply = handler(command, database)
        except CommandError as error:
            reply = {"ok": 0.0, "errmsg": str(error), "code": error.code, "codeName": error.code_name}
        except (KeyError, TypeError, ValueError) as error:  # a malformed command: answer, do not hang up
            reply = {"ok": 0.0, "errmsg": f"fast stand-in: bad {name!r} command: {error!r}", "code": 9,
                     "codeName": "FailedToParse"}
        return reply if isinstance(reply, bytes) else bson.encode(reply)

    def hello(self, command: dict[str, Any], database: str) -> dict[str, Any]:
        return {
            "helloOk": True,
            "isWritablePrimary": True,
            "ismaster": True,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": next(self.connection_ids),
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }

    def list_collections(self, command: dict[str, Any], database: str) -> bytes:
        names = sorted(self.store.collections) if database == self.store.database else []
        infos = [bson.encode({"name": name, "type": "collection", "options": {}, "info": {"readOnly": True}})
                 for name in names]
        return _cursor_reply("firstBatch", infos, 0, f"{database}.$cmd.listCollections")

    def count(self, command: dict[str, Any], database: str) -> dict[str, Any]:
        collection = self.store.collection(database, command["count"])
        start, stop = _range_for(self.store, collection, command.get("query") or {})
        return {"n": stop - start, "ok": 1.0}

    def find(self, command: dict[str, Any], database: str) -> bytes:
        name = command["find"]
        collection = self.store.collection(database, name)
        for key, direction in (command.get("sort") or {}).items():
            if key not in _ORDERED_FIELDS or direction != 1:
                raise CommandError(f"fast stand-in: unsupported sort {command['sort']!r}")
        if not _keeps_every_field(command.get("projection")) or command.get("skip") or command.get("collation"):
            raise CommandError(
                "fast stand-in: skip, collation and projections that leave out a field are not supported"
            )
        start, stop = _range_for(self.store, collection, command.get("filter") or {})
        limit = int(command.get("limit") or 0)
        single_batch = bool(command.get("singleBatch")) or limit < 0
        if limit:
            stop = min(stop, start + abs(limit))
        with self.store.lock:
            collection.finds.append({"filter": repr(command.get("filter") or {}), "documents": stop - start})
        cursor = Cursor(collection, f"{database}.{name}", start, stop)
        batch_size = command.get("batchSize")
        documents = self._take(cursor, DEFAULT_FIRST_BATCH if batch_size is None else int(batch_size))
        cursor_id = 0
        if cursor.position < cursor.stop and not single_batch:
            cursor_id = next(self.cursor_ids)
            with self.store.lock:
                self.cursors[cursor_id] = cursor
        return _cursor_reply("firstBatch", documents, cursor_id, cursor.ns)

    def get_more(self, command: dict[str, Any], database: str) -> bytes:
        cursor_id = int(command["getMore"])
        with self.store.lock:
            cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(f"cursor id {cursor_id} not found", 43, "CursorNotFound")
        documents = self._take(cursor, int(command.get("batchSize") or 0) or sys.maxsize)
        if cursor.position >= cursor.stop:
            with self.store.lock:
                self.cursors.pop(cursor_id, None)
            cursor_id = 0
        return _cursor_reply("nextBatch", documents, cursor_id, cursor.ns)

    def _take(self, cursor: Cursor, batch_size: int) -> list[bytes]:
        end = min(cursor.stop, cursor.position + batch_size)
        documents = self.store.documents[cursor.position:end]
        size = sum(map(len, documents))
        while size > _BATCH_BYTES and len(documents) > 1:  # a reply holds at most 16 MiB, as MongoDB's
            size -= len(documents.pop())
        cursor.position += len(documents)
        with self.store.lock:
            cursor.collection.served += len(documents)
            cursor.collection.served_bytes += size
        return documents

    def kill_cursors(self, command: dict[str, Any], database: str) -> dict[str, Any]:
        killed = []
        with self.store.lock:
            for cursor_id in command.get("cursors", []):
                if self.cursors.pop(int(cursor_id), None) is not None:
                    killed.append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0}

    def set_count(self, command: dict[str, Any], database: str) -> dict[str, Any]:
        collection = self.store.collection(self.store.database, command["benchSetCount"])
        count = int(command["count"])
        if not 0 <= count <= len(self.store.documents) or collection.count == 0:
            raise CommandError(f"fast stand-in: cannot resize {command['benchSetCount']!r} to {count}")
        collection.count = count
        return {"ok": 1.0}

    def stats(self, command: dict[str, Any], database: str) -> dict[str, Any]:
        with self.store.lock:
            collections = {
                name: {"count": c.count, "served": Int64(c.served), "served_bytes": Int64(c.served_bytes),
                       "finds": list(c.finds)}
                for name, c in self.store.collections.items()
            }
            if command.get("reset"):
                for c in self.store.collections.values():
                    c.served = c.served_bytes = 0
                    c.finds.clear()
        return {"collections": collections, "ok": 1.0}


# -- the wire ---------------------------------------------------------------------------------------------------


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        chunk = sock.recv_into(view[received:], size - received)
        if chunk == 0:
            return None
        received += chunk
    return bytes(buffer)


def _parse_op_msg(body: bytes) -> tuple[int, dict[str, Any]]:
    flags = _INT32.unpack_from(body, 0)[0]
    end = len(body) - (4 if flags & _CHECKSUM_PRESENT else 0)
    offset, command = 4, {}
    while offset < end:
        kind = body[offset]
        offset += 1
        size = _INT32.unpack_from(body, offset)[0]
        if kind == 0:
            command.update(bson.decode(body[offset:offset + size]))
        else:  # kind 1: a sequence of documents named by a cstring
            name_end = body.index(b"\x00", offset + 4)
            identifier = body[offset + 4:name_end].decode()
            command[identifier] = bson.decode_all(body[name_end + 1:offset + size])
        offset += size
    return flags, command


def _parse_op_query(body: bytes) -> dict[str, Any]:
    name_end = body.index(b"\x00", 4)
    namespace = body[4:name_end].decode()
    offset = name_end + 1 + 8  # numberToSkip, numberToReturn
    size = _INT32.unpack_from(body, offset)[0]
    query = bson.decode(body[offset:offset + size])
    if "$query" in query:
        query = query["$query"]
    query.setdefault("$db", namespace.split(".", 1)[0])
    return query


class Connection(socketserver.BaseRequestHandler):
    server: Listener

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(self.server.idle_seconds)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request_ids = itertools.count(1)
        try:
            while not self.server.stopping.is_set():
                header = _read_exactly(sock, 16)
                if header is None:
                    return
                length, request_id, _, opcode = _HEADER.unpack(header)
                if not 16 < length <= MAX_MESSAGE_SIZE:
                    return
                body = _read_exactly(sock, length - 16)
                if body is None:
                    return
                if opcode == OP_MSG:
                    flags, command = _parse_op_msg(body)
                    reply = self.server.commands.run(command)
                    if flags & _MORE_TO_COME:
                        continue
                    payload = b"\x00\x00\x00\x00\x00" + reply
                    reply_opcode = OP_MSG
                elif opcode == OP_QUERY:
                    reply = self.server.commands.run(_parse_op_query(body))
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + reply
                    reply_opcode = OP_REPLY
                else:
                    return  # nothing else is spoken here: hang up
                sock.sendall(_HEADER.pack(16 + len(payload), next(request_ids), request_id, reply_opcode) + payload)
        except OSError:  # timeouts and resets included: this connection is over
            return


class Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, port: int, commands: Server, idle_seconds: float) -> None:
        self.commands = commands
        self.idle_seconds = idle_seconds
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), Connection)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--capacity", type=int, default=None, help="documents generated (default documents + 1%%)")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=3 * 3600, help="exit after this many seconds")
    parser.add_argument("--idle-seconds", type=float, default=900, help="close a connection idle this long")
    args = parser.parse_args()
    capacity = args.capacity or args.documents + max(1, args.documents // 100)
    started = time.perf_counter()
    store = Store(args.database, args.documents, args.small, max(capacity, args.documents, args.small))
    listener = Listener(args.port, Server(store), args.idle_seconds)
    threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    sizes = sum(map(len, store.documents)) / len(store.documents)
    print(f"mongodb://127.0.0.1:{listener.server_address[1]}/", flush=True)
    print(f"fast stand-in: {len(store.documents):,} documents of {sizes:.0f} B on average, "
          f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    # Exit when the parent closes our standard input (or dies), or when the lifetime is over.
    watcher = threading.Thread(target=sys.stdin.buffer.read, daemon=True)
    watcher.start()
    watcher.join(timeout=args.lifetime)
    listener.stopping.set()
    listener.shutdown()
    listener.server_close()
    os._exit(0)  # connection threads may sit in recv: do not wait for them


if __name__ == "__main__":
    main()
