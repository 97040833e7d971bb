"""``MongoStandIn``: a MongoDB wire-protocol server on 127.0.0.1, backed by mongomock.

pymongo connects to it with a plain ``MongoClient(standin.uri)``, from this process or any other.
mockupdb reads each request off the socket (OP_MSG, and the legacy OP_QUERY pymongo's handshake uses)
and frames the replies; ``commands.MongomockCommands`` decides what they say. mockupdb's own server
loop is not used: it holds one lock while answering, so a slow reply on one connection would stall
every other connection, and its accept loop needs a second to stop.

Faults are armed per collection and checked on every request, so a test can change them while clients
are connected; ``hold`` keeps a collection's replies back until ``release``, so a test can stop a reader
mid-read for as long as it needs without a clock. Handshake commands (hello/isMaster) are answered but not
recorded in ``commands_seen``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import bson
import mockupdb
import mongomock

from mongodb_dlt.testing.commands import (
    CommandError,
    MongomockCommands,
    command_collection,
    command_name,
)
from mongodb_dlt.testing.mongomock_compat import patch_mongomock_bson_ordering

logger = logging.getLogger(__name__)

HANDSHAKE_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})
FAILING_COMMANDS = frozenset({"find", "aggregate", "count", "distinct"})
COMMAND_LOG_SIZE = 10_000
_MORE_TO_COME = mockupdb.OP_MSG_FLAGS["moreToCome"]
_OP_REPLY, _OP_MSG = 1, 2013


@dataclass
class _Fault:
    """One armed fault; ``remaining`` None fires forever, otherwise that many more times."""

    remaining: int | None
    code: int = 13
    message: str = ""
    after_batches: int = 1
    seconds: float = 0.0

    def fire(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class _HangUp(Exception):
    """Raised by a fault to close the connection instead of replying."""


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], standin: MongoStandIn) -> None:
        self.standin = standin
        super().__init__(address, _Connection)


class _Connection(socketserver.BaseRequestHandler):
    server: _Listener

    def handle(self) -> None:
        self.server.standin._serve_connection(self.request)


class MongoStandIn:
    """A MongoDB server on a local port serving the data of a mongomock client.

    Use as a context manager (or ``start()``/``stop()``). ``client`` is the mongomock client holding the
    data; tests write through it directly. Fault injection and the command log are thread-safe.
    """

    def __init__(
        self, client: mongomock.MongoClient | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        # Patched here, not on import: importing mongodb_dlt.testing leaves mongomock as it is.
        patch_mongomock_bson_ordering()
        self.client: mongomock.MongoClient = client if client is not None else mongomock.MongoClient()
        self.host = host
        self._requested_port = port
        self._commands = MongomockCommands(self.client)
        self._listener: _Listener | None = None
        self._serve_thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._connection_count = 0
        self._faults: dict[tuple[str, str, str], _Fault] = {}
        self._holds: dict[tuple[str, str], threading.Event] = {}
        self._log: deque[tuple[str, str | None, dict[str, Any]]] = deque(maxlen=COMMAND_LOG_SIZE)
        self._reply_ids = itertools.count(1)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Binds the port and serves in background threads; returns self. Starting twice is a no-op."""
        with self._state_lock:
            if self._listener is not None:
                return self
            self._listener = _Listener((self.host, self._requested_port), self)
        self._serve_thread = threading.Thread(
            target=self._listener.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mongo-standin-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        logger.debug("MongoDB stand-in listening on %s", self.uri)
        return self

    def stop(self) -> None:
        """Stops accepting, hangs up every open connection and waits for the accept loop to end."""
        with self._state_lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = list(self._sockets), set()
        self._release_holds()
        if listener is None:
            return
        listener.shutdown()
        listener.server_close()
        for sock in open_sockets:
            _hang_up(sock)
        if self._serve_thread is not None:
            self._serve_thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return int(self._listener.server_address[1])

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def uri(self) -> str:
        """A connection string any pymongo client (in any process on this machine) can use."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    # -- fault injection ---------------------------------------------------------------------------

    def fail_collection(
        self,
        database: str,
        collection: str,
        *,
        code: int = 13,
        message: str | None = None,
        times: int | None = None,
    ) -> None:
        """Reads (find, aggregate, count, distinct) of the collection answer ``ok: 0`` with ``code``."""
        if message is None:
            message = f'not authorized on {database} to execute command {{ find: "{collection}" }}'
        self._arm("fail", database, collection, _Fault(times, code=code, message=message))

    def drop_connection(
        self, database: str, collection: str, *, after_batches: int = 1, times: int = 1
    ) -> None:
        """Hangs up, without a reply, on the ``after_batches``-th getMore of a cursor on the collection."""
        if after_batches < 1:
            raise ValueError("after_batches counts getMores and must be at least 1")
        self._arm("drop", database, collection, _Fault(times, after_batches=after_batches))

    def slow(self, database: str, collection: str, seconds: float, *, times: int | None = None) -> None:
        """Delays every reply to a command on the collection by ``seconds``."""
        self._arm("slow", database, collection, _Fault(times, seconds=seconds))

    def hold(self, database: str, collection: str) -> None:
        """Holds back every reply to a command on the collection (a read's find, getMores, counts) until
        ``release`` or ``clear_faults``: its readers wait mid-read, however long the test takes meanwhile."""
        with self._state_lock:
            self._holds.setdefault((database, collection), threading.Event())

    def release(self, database: str, collection: str) -> None:
        """Lets the replies held by ``hold`` go, and answers the collection's commands at once again."""
        with self._state_lock:
            held = self._holds.pop((database, collection), None)
        if held is not None:
            held.set()

    def clear_faults(self) -> None:
        with self._state_lock:
            self._faults.clear()
        self._release_holds()

    def _release_holds(self) -> None:
        with self._state_lock:
            holds, self._holds = list(self._holds.values()), {}
        for held in holds:
            held.set()

    def _arm(self, kind: str, database: str, collection: str, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self._state_lock:
            self._faults[(kind, database, collection)] = fault

    def _fire(self, kind: str, database: str, collection: str | None) -> _Fault | None:
        if collection is None:
            return None
        with self._state_lock:
            fault = self._faults.get((kind, database, collection))
            if fault is None or not fault.fire():
                return None
            if fault.remaining == 0:
                del self._faults[(kind, database, collection)]
            return fault

    # -- command log -------------------------------------------------------------------------------

    def commands_seen(
        self, database: str | None = None, collection: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the command documents received (oldest first, the last 10,000), optionally filtered."""
        with self._state_lock:
            entries = list(self._log)
        return [
            copy.deepcopy(command)
            for db, coll, command in entries
            if (database is None or db == database) and (collection is None or coll == collection)
        ]

    def clear_commands(self) -> None:
        with self._state_lock:
            self._log.clear()

    # -- serving -----------------------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        with self._state_lock:
            if self._listener is None:
                _hang_up(sock)
                return
            self._sockets.add(sock)
            self._connection_count += 1
            connection_id = self._connection_count
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    request = mockupdb.mock_server_receive_request(sock, None)
                except OSError:
                    return  # the client (or stop()) closed the connection
                if not isinstance(request, mockupdb.CommandBase):
                    logger.warning("stand-in: closing a connection that sent %r", request)
                    return
                try:
                    reply, delay = self._answer(request, connection_id)
                except _HangUp:
                    request.hangup()
                    return
                if delay:
                    time.sleep(delay)
                # An OP_MSG with moreToCome (an unacknowledged write) must not be answered.
                if not (isinstance(request, mockupdb.OpMsg) and request.flags & _MORE_TO_COME):
                    sock.sendall(_reply_bytes(request, reply, next(self._reply_ids)))
        except (OSError, ValueError, NotImplementedError) as error:
            logger.debug("stand-in: connection %d ended: %r", connection_id, error)
        finally:
            with self._state_lock:
                self._sockets.discard(sock)
            _hang_up(sock)

    def _answer(self, request: mockupdb.CommandBase, connection_id: int) -> tuple[dict[str, Any], float]:
        """The reply to one command and how long to hold it back; raises _HangUp to drop the connection."""
        command = _plain(request.doc)
        name = command_name(command)
        if name in HANDSHAKE_COMMANDS:
            return MongomockCommands.hello(command, connection_id), 0.0
        database = str(request.namespace)
        collection = command_collection(command)
        with self._state_lock:
            self._log.append((database, collection, command))
            held = self._holds.get((database, collection)) if collection is not None else None
        if held is not None:
            held.wait()

        slow = self._fire("slow", database, collection)
        delay = slow.seconds if slow else 0.0
        if name in FAILING_COMMANDS and (failure := self._fire("fail", database, collection)):
            return CommandError(failure.code, failure.message).reply(), delay
        if name == "getMore":
            self._maybe_drop(database, collection, int(command["getMore"]))
        try:
            return self._commands.execute(database, command), delay
        except CommandError as error:
            return error.reply(), delay

    def _maybe_drop(self, database: str, collection: str | None, cursor_id: int) -> None:
        served = self._commands.get_mores_served(cursor_id)
        if served is None or collection is None:
            return
        with self._state_lock:
            fault = self._faults.get(("drop", database, collection))
            due = fault is not None and served + 1 == fault.after_batches
        if due and self._fire("drop", database, collection):
            self._commands.discard_cursor(cursor_id)
            raise _HangUp


def _reply_bytes(request: mockupdb.CommandBase, reply: dict[str, Any], reply_id: int) -> bytes:
    """The reply to ``request`` framed as mockupdb frames it (OP_MSG, or OP_REPLY to a legacy OP_QUERY command),
    but numbered by the stand-in: mockupdb numbers replies with the ``random`` module's shared generator, which
    would make the serving threads draw from it while the tests run (hypothesis tells tests that do so apart)."""
    document = bson.encode(reply)
    if isinstance(request, mockupdb.OpMsg):
        data, opcode = struct.pack("<IB", 0, 0) + document, _OP_MSG  # no flags; one section of kind 0
    else:
        data, opcode = struct.pack("<iqii", 0, 0, 0, 1) + document, _OP_REPLY  # no flags, no cursor, one document
    return struct.pack("<iiii", 16 + len(data), reply_id, request.request_id, opcode) + data


def _plain(value: Any) -> Any:
    """mockupdb decodes into OrderedDicts; commands are logged and dispatched as plain dicts."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
