"""MongoDB command semantics over a mongomock client: what the stand-in answers to each command.

Knows nothing of sockets or faults (see ``server.py``). Every handler takes the database name and the
command document as pymongo sent it, and returns the reply document or raises ``CommandError``.
Documents leave here already BSON-encoded (``RawBSONDocument``), so a cursor batch can be cut to the
server's 16 MiB reply limit exactly as a real server cuts it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
import mongomock
import pymongo.errors
from bson import Int64
from bson.raw_bson import RawBSONDocument
from mongomock import filtering

logger = logging.getLogger(__name__)

MAX_WIRE_VERSION = 17  # MongoDB 6.0; pymongo 4.20 needs at least 9
SERVER_VERSION = "6.0.0"
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH_SIZE = 100_000
DEFAULT_FIRST_BATCH = 101
# A batch stops growing once it passes this many bytes, leaving room for the reply envelope.
MAX_BATCH_BYTES = MAX_BSON_OBJECT_SIZE - 64 * 1024
IDLE_CURSOR_SECONDS = 600.0  # the server's cursorTimeoutMillis default

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    13: "Unauthorized",
    18: "AuthenticationFailed",
    26: "NamespaceNotFound",
    43: "CursorNotFound",
    48: "NamespaceExists",
    59: "CommandNotFound",
    11000: "DuplicateKey",
}

SYSTEM_DATABASES = ("admin", "config", "local")


class CommandError(Exception):
    """A command's failure, answered as ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> dict[str, Any]:
        return {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": CODE_NAMES.get(self.code, ""),
        }


@dataclass
class _Cursor:
    id: int
    namespace: str
    documents: list[dict[str, Any]]
    position: int = 0
    get_mores: int = 0
    last_used: float = field(default_factory=time.monotonic)


def command_name(command: Mapping[str, Any]) -> str:
    return next(iter(command), "")


def command_collection(command: Mapping[str, Any]) -> str | None:
    """The collection a command works on, or None for database- and server-level commands."""
    target = command.get("collection") if command_name(command) == "getMore" else next(iter(command.values()), None)
    return target if isinstance(target, str) else None


class MongomockCommands:
    """Answers commands from the data of one mongomock client; safe to call from many threads."""

    def __init__(self, client: mongomock.MongoClient) -> None:
        self.client = client
        self._lock = threading.RLock()
        self._cursors: dict[int, _Cursor] = {}
        self._handlers: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
            "ping": self._acknowledge,
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "find": self._find,
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
            "listCollections": self._list_collections,
            "listDatabases": self._list_databases,
            "listIndexes": self._list_indexes,
            "createIndexes": self._create_indexes,
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
            "create": self._create,
            "endSessions": self._acknowledge,
            "saslStart": self._authenticate,
            "authenticate": self._authenticate,
        }

    def execute(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        """Runs one command; mongomock's own errors become ``CommandError`` as a server's would."""
        name = command_name(command)
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError(59, f"no such command: '{name}'")
        try:
            with self._lock:
                return handler(database, command)
        except CommandError:
            raise
        except pymongo.errors.OperationFailure as error:
            raise CommandError(error.code or 2, str(error)) from error
        except NotImplementedError as error:
            raise CommandError(2, f"not supported by the stand-in (mongomock): {error}") from error
        except (ValueError, TypeError) as error:
            raise CommandError(2, str(error)) from error
        except Exception as error:
            logger.exception("stand-in failed on %s", name)
            raise CommandError(1, f"stand-in internal error: {error!r}") from error

    def get_mores_served(self, cursor_id: int) -> int | None:
        """How many getMores the cursor has answered, or None when no such cursor is open."""
        with self._lock:
            cursor = self._cursors.get(cursor_id)
            return None if cursor is None else cursor.get_mores

    def discard_cursor(self, cursor_id: int) -> None:
        with self._lock:
            self._cursors.pop(cursor_id, None)

    # -- handshake and server-level commands -------------------------------------------------------

    @staticmethod
    def hello(command: Mapping[str, Any], connection_id: int) -> dict[str, Any]:
        """The reply that makes pymongo see a writable standalone server (no topologyVersion: polling)."""
        primary_key = "isWritablePrimary" if command_name(command) == "hello" else "ismaster"
        return {
            primary_key: True,
            "helloOk": True,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
            "localTime": datetime.now(UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": connection_id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1.0,
        }

    def _acknowledge(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        return {"ok": 1.0}

    def _build_info(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": SERVER_VERSION,
            "versionArray": [int(part) for part in SERVER_VERSION.split(".")] + [0],
            "gitVersion": "mongodb-dlt-stand-in",
            "bits": 64,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "ok": 1.0,
        }

    def _authenticate(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        raise CommandError(18, "Authentication failed.")

    # -- reads and cursors -------------------------------------------------------------------------

    def _find(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name = command["find"]
        collection = self.client[database][name]
        sort = command.get("sort") or None
        cursor = collection.find(
            command.get("filter") or {},
            projection=command.get("projection") or None,
            skip=int(command.get("skip") or 0),
            limit=int(command.get("limit") or 0),
            sort=list(sort.items()) if sort else None,
        )
        return self._first_batch(f"{database}.{name}", _materialize(cursor), command)

    def _aggregate(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name = command["aggregate"]
        if not isinstance(name, str):
            raise CommandError(2, "database-level aggregate is not supported by the stand-in")
        if command.get("explain"):
            raise CommandError(2, "explain is not supported by the stand-in")
        documents = list(self.client[database][name].aggregate(command.get("pipeline") or []))
        return self._first_batch(f"{database}.{name}", documents, command.get("cursor") or {})

    def _get_more(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        cursor_id = int(command["getMore"])
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        namespace = f"{database}.{command.get('collection')}"
        if namespace != cursor.namespace:
            raise CommandError(
                13,
                f"Requested getMore on namespace '{namespace}', but cursor belongs to '{cursor.namespace}'",
            )
        cursor.get_mores += 1
        batch = self._next_batch(cursor, command.get("batchSize") or None)
        return {
            "cursor": {"nextBatch": batch, "id": Int64(self._keep_or_close(cursor)), "ns": namespace},
            "ok": 1.0,
        }

    def _kill_cursors(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        killed, not_found = [], []
        for cursor_id in command.get("cursors") or []:
            (killed if self._cursors.pop(int(cursor_id), None) else not_found).append(Int64(cursor_id))
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": not_found,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    def _count(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        collection = self.client[database][command["count"]]
        options = {key: int(command[key]) for key in ("skip", "limit") if command.get(key)}
        return {"n": collection.count_documents(command.get("query") or {}, **options), "ok": 1.0}

    def _distinct(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        values = self.client[database][command["distinct"]].distinct(
            command["key"], command.get("query") or {}
        )
        return {"values": values, "ok": 1.0}

    def _list_collections(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name_only = bool(command.get("nameOnly"))
        entries = []
        for name in sorted(self.client[database].list_collection_names()):
            entry: dict[str, Any] = {"name": name, "type": "collection"}
            if not name_only:
                entry.update(
                    options={}, info={"readOnly": False}, idIndex={"v": 2, "key": {"_id": 1}, "name": "_id_"}
                )
            entries.append(entry)
        entries = _matching(entries, command.get("filter"))
        return self._first_batch(f"{database}.$cmd.listCollections", entries, command.get("cursor") or {})

    def _list_databases(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        names = sorted(set(self.client.list_database_names()) | set(SYSTEM_DATABASES))
        if command.get("nameOnly"):
            entries: list[dict[str, Any]] = [{"name": name} for name in names]
        else:
            entries = [
                {"name": name, "sizeOnDisk": self._size_on_disk(name), "empty": False} for name in names
            ]
        entries = _matching(entries, command.get("filter"))
        reply: dict[str, Any] = {"databases": entries, "ok": 1.0}
        if not command.get("nameOnly"):
            total = sum(entry["sizeOnDisk"] for entry in entries)
            reply.update(totalSize=total, totalSizeMb=total // (1024 * 1024))
        return reply

    def _size_on_disk(self, database: str) -> int:
        # A plausible figure is enough; encoding every document would make this command slow.
        return 8192 * (1 + len(self.client[database].list_collection_names()))

    def _list_indexes(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name = command["listIndexes"]
        if name not in self.client[database].list_collection_names():
            raise CommandError(26, f"ns does not exist: {database}.{name}")
        entries = []
        for index_name, info in self.client[database][name].index_information().items():
            entry = {key: value for key, value in info.items() if key != "key"}
            entries.append({"v": 2, "key": dict(info["key"]), "name": index_name, **entry})
        return self._first_batch(f"{database}.{name}", entries, command.get("cursor") or {})

    # -- writes ------------------------------------------------------------------------------------

    def _create_indexes(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        collection = self.client[database][command["createIndexes"]]
        created_collection = command["createIndexes"] not in self.client[database].list_collection_names()
        before = len(collection.index_information()) if not created_collection else 1
        for spec in command.get("indexes") or []:
            options = {key: value for key, value in spec.items() if key not in ("key", "v")}
            collection.create_index(list(spec["key"].items()), **options)
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": len(collection.index_information()),
            "createdCollectionAutomatically": created_collection,
            "ok": 1.0,
        }

    def _insert(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        collection = self.client[database][command["insert"]]

        def insert(index: int, document: dict[str, Any]) -> int:
            collection.insert_one(document)
            return 1

        return self._write_batch(command, command.get("documents") or [], insert)

    def _update(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        collection = self.client[database][command["update"]]
        upserted: list[dict[str, Any]] = []
        modified = 0

        def update(index: int, statement: dict[str, Any]) -> int:
            nonlocal modified
            query, change = statement.get("q") or {}, statement["u"]
            options: dict[str, Any] = {"upsert": bool(statement.get("upsert"))}
            if isinstance(change, Mapping) and not any(key.startswith("$") for key in change):
                result = collection.replace_one(query, change, **options)
            else:
                if statement.get("arrayFilters"):
                    options["array_filters"] = statement["arrayFilters"]
                method = collection.update_many if statement.get("multi") else collection.update_one
                result = method(query, change, **options)
            modified += result.modified_count
            if result.upserted_id is not None:
                upserted.append({"index": index, "_id": result.upserted_id})
                return 1
            return result.matched_count

        statements = command.get("updates") or []
        reply = self._write_batch(command, statements, update)
        reply["nModified"] = modified
        if upserted:
            reply["upserted"] = upserted
        return reply

    def _delete(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        collection = self.client[database][command["delete"]]

        def delete(index: int, statement: dict[str, Any]) -> int:
            method = collection.delete_one if statement.get("limit") == 1 else collection.delete_many
            return method(statement.get("q") or {}).deleted_count

        return self._write_batch(command, command.get("deletes") or [], delete)

    def _drop(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name = command["drop"]
        if name not in self.client[database].list_collection_names():
            raise CommandError(26, "ns not found")
        self.client[database].drop_collection(name)
        return {"ns": f"{database}.{name}", "nIndexesWas": 1, "ok": 1.0}

    def _drop_database(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        self.client.drop_database(database)
        return {"dropped": database, "ok": 1.0}

    def _create(self, database: str, command: dict[str, Any]) -> dict[str, Any]:
        name = command["create"]
        if name in self.client[database].list_collection_names():
            raise CommandError(48, f"Collection {database}.{name} already exists.")
        self.client[database].create_collection(name)
        return {"ok": 1.0}

    @staticmethod
    def _write_batch(
        command: Mapping[str, Any], statements: list[Any], apply: Callable[[int, Any], int]
    ) -> dict[str, Any]:
        """Applies statements in order; failures become writeErrors (stopping at the first when ordered)."""
        ordered = command.get("ordered", True)
        n, write_errors = 0, []
        for index, statement in enumerate(statements):
            try:
                n += apply(index, statement)
            except (pymongo.errors.PyMongoError, NotImplementedError, ValueError, TypeError) as error:
                code = getattr(error, "code", None) or 2
                write_errors.append({"index": index, "code": code, "errmsg": str(error)})
                if ordered:
                    break
        reply: dict[str, Any] = {"n": n, "ok": 1.0}
        if write_errors:
            reply["writeErrors"] = write_errors
        return reply

    # -- cursor batching ---------------------------------------------------------------------------

    def _first_batch(
        self, namespace: str, documents: list[dict[str, Any]], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Serves the first batch; the rest stays behind a cursor id for getMore (0 when all was sent)."""
        self._close_idle_cursors()
        cursor = _Cursor(id=0, namespace=namespace, documents=documents)
        batch_size = options.get("batchSize")
        batch = self._next_batch(cursor, DEFAULT_FIRST_BATCH if batch_size is None else int(batch_size))
        if options.get("singleBatch"):
            cursor_id = 0
        else:
            cursor.id = _new_cursor_id(self._cursors)
            cursor_id = self._keep_or_close(cursor)
        return {"cursor": {"firstBatch": batch, "id": Int64(cursor_id), "ns": namespace}, "ok": 1.0}

    def _keep_or_close(self, cursor: _Cursor) -> int:
        if cursor.position >= len(cursor.documents):
            self._cursors.pop(cursor.id, None)
            return 0
        cursor.last_used = time.monotonic()
        self._cursors[cursor.id] = cursor
        return cursor.id

    @staticmethod
    def _next_batch(cursor: _Cursor, batch_size: int | None) -> list[RawBSONDocument]:
        """Up to batch_size documents (all when None), cut early at the reply size limit."""
        remaining = len(cursor.documents) - cursor.position
        end = cursor.position + (remaining if batch_size is None else min(remaining, batch_size))
        batch: list[RawBSONDocument] = []
        size = 0
        while cursor.position < end:
            encoded = bson.encode(cursor.documents[cursor.position])
            if batch and size + len(encoded) > MAX_BATCH_BYTES:
                break
            batch.append(RawBSONDocument(encoded))
            size += len(encoded)
            cursor.position += 1
        return batch

    def _close_idle_cursors(self) -> None:
        deadline = time.monotonic() - IDLE_CURSOR_SECONDS
        for cursor_id in [c.id for c in self._cursors.values() if c.last_used < deadline]:
            del self._cursors[cursor_id]


def _new_cursor_id(taken: Mapping[int, Any]) -> int:
    while True:
        cursor_id = secrets.randbits(62) + 1
        if cursor_id not in taken:
            return cursor_id


def _materialize(cursor: Any) -> list[dict[str, Any]]:
    """All of a mongomock cursor's documents at once.

    Iterating a mongomock 4.3 cursor re-slices its whole result list on every document (quadratic:
    20,000 documents take about 2 s), so the list is taken in one piece when mongomock allows it.
    """
    compute = getattr(cursor, "_compute_results", None)
    if compute is None:
        return list(cursor)
    return list(compute(with_limit_and_skip=True))


def _matching(entries: Iterable[dict[str, Any]], query: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not query:
        return list(entries)
    return [entry for entry in entries if filtering.filter_applies(query, entry)]
