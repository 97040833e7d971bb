"""The destination, built once from the YAML's ``destination:``: the dlt destination, the file format, the working
folder, and every DuckDB specific (its file, its lock, its memory limit) in this one place.

DuckDB allows one writing process per file, and a reader (an analyst's notebook) holds the file too: a session opens
the file once, waiting with backoff while another process holds it, and keeps it for the block, so a reader
cannot slip in between dlt's statements. Inside one process, writers to one destination take turns: several dlt
pipelines committing to one DuckDB catalog at once fail with write-write conflicts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from dlt.common.destination import Destination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from mongodb_dlt.config import DestinationConfig
from mongodb_dlt.errors import DestinationLockedError, DestinationNotWritableError
from mongodb_dlt.naming import SINGLE_WRITER_DESTINATIONS

DEFAULT_PIPELINES_DIR = ".mongodb_dlt/pipelines"

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_MAX_LOCK_WAIT_STEP_SECONDS = 10.0

_destination_locks: dict[str, threading.Lock] = {}
_destination_locks_guard = threading.Lock()


@contextmanager
def _destination_write_lock(destination_id: str) -> Iterator[None]:
    with _destination_locks_guard:
        lock = _destination_locks.setdefault(destination_id, threading.Lock())
    with lock:
        yield


def lock_holder(error: BaseException) -> str | None:
    """``PID 123 (/usr/bin/python3)`` when ``error`` is DuckDB refusing a file another process holds."""
    match = _LOCK_HOLDER.search(str(error))
    if match is None:
        return None
    return f"PID {match['pid']} ({match['program']})"


@contextmanager
def duckdb_connection(
    path: str, config: dict[str, Any], timeout_seconds: float, log: logging.Logger
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``path`` held for the block, so no other process can take the file between
    dlt's statements. While another process holds the file, waits with backoff up to ``timeout_seconds``,
    logging who holds it."""
    started = time.monotonic()
    delay = 0.25
    while True:
        try:
            connection = duckdb.connect(path, config=config)
            break
        except duckdb.IOException as error:
            holder = lock_holder(error)
            if holder is None:
                raise DestinationNotWritableError(f"cannot open DuckDB file {path} for writing: {error}") from None
            waited = time.monotonic() - started
            if waited >= timeout_seconds:
                raise DestinationLockedError(
                    f"DuckDB file {path} is locked by {holder}; waited {waited:.0f} s "
                    f"(destination.lock_timeout: {timeout_seconds:g} s). Close that process's connection, or "
                    "raise lock_timeout, then run again."
                ) from None
            log.info(f"waiting for DuckDB file {path}: locked by {holder} ({waited:.0f} s of {timeout_seconds:g} s)")
            time.sleep(min(delay, timeout_seconds - waited))
            delay = min(delay * 2, _MAX_LOCK_WAIT_STEP_SECONDS)
    try:
        yield connection
    finally:
        connection.close()


@dataclass(frozen=True)
class LoadDestination:
    """Where every collection of one YAML lands, with relative paths resolved once (when the definitions load)."""

    config: DestinationConfig
    path: str | None
    """The DuckDB file, absolute (``:memory:``-style names as given); None for other destinations."""
    pipelines_dir: str
    """dlt's working folder, absolute. Scratch space: every load restores its state from the destination, and
    each destination gets its own folder inside (``working_dir``)."""

    @classmethod
    def from_config(
        cls, config: DestinationConfig, pipelines_dir: str | None = None, base: Path | None = None
    ) -> LoadDestination:
        """Resolves relative paths (the DuckDB file, the working folder) against ``base`` (default: the working
        directory, where the default config path is found too)."""
        base = (base or Path.cwd()).absolute()
        path = config.path
        if config.type == "duckdb" and path and not path.startswith(":"):
            path = str(base / Path(path).expanduser())
        return cls(
            config=config,
            path=path,
            pipelines_dir=str(base / Path(pipelines_dir or DEFAULT_PIPELINES_DIR).expanduser()),
        )

    @property
    def is_duckdb_file(self) -> bool:
        return self.config.type == "duckdb" and bool(self.path)

    @property
    def appends_first_loads(self) -> bool:
        """A merge collection's first load into a dataset holding none of its tables may append instead of merging:
        DuckDB and PostgreSQL tell that from ``information_schema`` cheaply and reliably; elsewhere we always merge."""
        return self.config.type in ("duckdb", "postgres")

    @property
    def stores_nul_in_text(self) -> bool:
        """PostgreSQL's text and jsonb cannot hold U+0000, which MongoDB's strings can: reads for it refuse such a
        document by key and field before anything loads (dlt's load would fail late, naming neither)."""
        return self.config.type != "postgres"

    @property
    def single_writer(self) -> bool:
        """One writing process at a time (DuckDB): the definitions serialize its steps."""
        return self.config.type in SINGLE_WRITER_DESTINATIONS

    @property
    def destination_id(self) -> str:
        """Identifies one writable destination: a DuckDB file, or a warehouse project."""
        return f"{self.config.type}:{self.path or self.config.project or ''}"

    @property
    def working_dir(self) -> Path:
        """This destination's own folder inside ``pipelines_dir``: local files never serve two warehouses."""
        digest = hashlib.sha256(self.destination_id.encode()).hexdigest()[:12]
        return Path(self.pipelines_dir) / f"{self.config.type}-{digest}"

    @property
    def local_paths(self) -> list[str]:
        """Where a load writes on this machine: the working folder, and a DuckDB file with the folder DuckDB spills
        to beside it (``<file>.tmp``, DuckDB's default). What to free when a disk fills."""
        paths = [str(self.working_dir)]
        if self.is_duckdb_file and self.path is not None:
            paths += [self.path, f"{self.path}.tmp"]
        return paths

    @property
    def file_format(self) -> str:
        """Parquet keeps normalize and load memory flat; BigQuery accepts JSON columns only from jsonl. PostgreSQL
        copies parquet through its ADBC driver (the ``postgres`` extra); without the driver, dlt's INSERT statements
        (a third of the speed)."""
        if self.config.loader_file_format:
            return self.config.loader_file_format
        if self.config.type == "bigquery":
            return "jsonl"
        if self.config.type == "postgres" and importlib.util.find_spec("adbc_driver_postgresql") is None:
            return "insert_values"
        return "parquet"

    def duckdb_config(self) -> dict[str, Any]:
        """Settings of every DuckDB connection a load opens (the warehouse's, and the local one over parquet)."""
        return {"memory_limit": self.config.memory_limit} if self.config.memory_limit else {}

    def dlt_destination(self, connection: duckdb.DuckDBPyConnection | None = None) -> Destination[Any, Any]:
        options: dict[str, Any] = dict(self.config.options)
        if connection is not None:
            options["credentials"] = DuckDbCredentials(connection)
        if self.config.type == "bigquery":
            if self.config.location:
                options["location"] = self.config.location
            if self.config.project:
                options["project_id"] = self.config.project
        return Destination.from_reference(self.config.type, **options)

    @property
    def loads_concurrently(self) -> bool:
        """PostgreSQL takes the loads of several collections at once, into one dataset too (tested against a real
        server); into other destinations a process's loads take turns (DuckDB allows one writer; the others are not
        tested here with concurrent loads)."""
        return self.config.type == "postgres"

    @contextmanager
    def session(self, log: logging.Logger) -> Iterator[Destination[Any, Any]]:
        """The dlt destination for one stretch of writing; for a DuckDB file, with the file held for the block."""
        if self.loads_concurrently:
            yield self.dlt_destination()
            return
        with _destination_write_lock(self.destination_id):
            if not self.is_duckdb_file:
                yield self.dlt_destination()
                return
            assert self.path is not None
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DestinationNotWritableError(f"cannot open DuckDB file {self.path} for writing: {error}") from None
            # preserve_insertion_order off lets DuckDB insert in less memory
            config = {"preserve_insertion_order": False, **self.duckdb_config()}
            with duckdb_connection(self.path, config, self.config.lock_timeout, log) as connection:
                yield self.dlt_destination(connection)
