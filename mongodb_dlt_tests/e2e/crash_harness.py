"""Loads one collection and SIGKILLs the loading process at a named boundary of the load: a crash harness, for
DuckDB and PostgreSQL (whose jobs copy parquet through ADBC).

    python mongodb_dlt_tests/e2e/crash_harness.py '{"point": "job_committed", "config": "...", "database": "shop",
                                               "collection": "orders", "pipelines_dir": "..."}'
    python mongodb_dlt_tests/e2e/crash_harness.py --serve

The first form loads in this process. The second reads one such scenario per line on stdin, forks a child with
everything already imported for each (no start-up cost per scenario), and answers each line with the child's
exit: ``killed 9`` or ``exited N``. The kill comes from inside the loading process at the exact instant named,
never from a timer, so every scenario is deterministic. Exit code 3 means the point was never reached (the
scenario did not happen), 4 that the load failed instead; either way the test that ran us fails. A scenario
without a point (``"point": null``) is a plain load, killed nowhere: it exits 0 when the load succeeds. A scenario
with a ``count_file`` has the documents each batch of a chunked read held appended there, one line per batch, as
they are read.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import dlt
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob
from dlt.destinations.impl.duckdb.sql_client import DuckDbSqlClient
from dlt.destinations.impl.postgres.postgres import PostgresParquetCopyJob
from dlt.destinations.job_client_impl import SqlJobClientBase, SqlLoadJob

from mongodb_dlt.config import load_config
from mongodb_dlt.extract import ranges
from mongodb_dlt.load.loader import LAZILY_IMPORTED_BY_DLT, MongoDltLoader

POINTS = (
    "after_extract",  # the package is extracted; nothing was sent
    "after_normalize",  # the package is ready to load; nothing was sent
    "job_uncommitted",  # a job's rows are inserted inside a transaction that never commits
    "job_committed",  # a job's rows are committed, dlt has not recorded the job as done
    "merge_committed",  # merge only: the merge into the final tables committed, dlt has not recorded it
    "load_recorded",  # the package is in _dlt_loads, the pipeline has not finished with it
    # chunked reads (chunk_size): the first chunk is committed when these fire
    "chunk_read",  # in the middle of reading the second chunk: after its first batch
    "chunk_job_committed",  # a job of the second chunk is committed, dlt has not recorded it
    "between_chunks",  # the second chunk is committed, the third not started
)
CHUNK_POINTS = POINTS[-3:]

_lock = threading.Lock()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: type, name: str, when: Callable[[], bool] = lambda: True) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when():
            die()
        return result

    setattr(owner, name, wrapper)


class _Chunks:
    """Counts the packages of a chunked read (``MongoDltLoader._load_chunk`` calls) and the batches and documents
    read (``ranges.batch_end`` calls, each batch of a chunked read); the documents read go to ``count_file`` as they
    are read, so they are known however the process dies."""

    def __init__(self, count_file: str | None) -> None:
        self.chunk = 0
        self.batches_in_chunk = 0
        self.count_file = count_file
        load_chunk = MongoDltLoader._load_chunk
        batch_end = ranges.batch_end

        def counted_load_chunk(loader: MongoDltLoader, *args: Any, **kwargs: Any) -> Any:
            self.chunk += 1
            self.batches_in_chunk = 0
            return load_chunk(loader, *args, **kwargs)

        def counted_batch_end(raw: bytes) -> tuple[int, Any]:
            found = batch_end(raw)
            self.batches_in_chunk += 1
            if self.count_file is not None:
                with open(self.count_file, "a") as counts:
                    counts.write(f"{found[0]}\n")
            return found

        MongoDltLoader._load_chunk = counted_load_chunk  # type: ignore[method-assign]
        ranges.batch_end = counted_batch_end

    def in_second(self) -> bool:
        return self.chunk == 2


def _uncommitted_insert() -> None:
    original = DuckDbSqlClient.execute_sql

    def execute_sql(self: DuckDbSqlClient, sql: Any, *args: Any, **kwargs: Any) -> Any:
        if str(sql).startswith("INSERT INTO") and "read_parquet" in str(sql):
            with _lock:
                original(self, "BEGIN TRANSACTION")
                original(self, sql, *args, **kwargs)
                die()
        return original(self, sql, *args, **kwargs)

    DuckDbSqlClient.execute_sql = execute_sql  # type: ignore[method-assign]


class _DiesAtCommit:
    """An ADBC connection whose commit kills the process: the job's rows were sent and never committed."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __enter__(self) -> _DiesAtCommit:
        self._connection.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._connection.__exit__(*exc_info)

    def cursor(self) -> Any:
        return self._connection.cursor()

    def commit(self) -> None:
        die()


def _uncommitted_copy() -> None:
    """PostgreSQL's parquet jobs copy through an ADBC connection of their own, committed at the job's end."""
    original = PostgresParquetCopyJob._connect

    def connect(self: PostgresParquetCopyJob) -> Any:
        return _DiesAtCommit(original(self))

    PostgresParquetCopyJob._connect = connect  # type: ignore[method-assign]


def arm(point: str, destination: str, chunks: _Chunks) -> None:
    """Kills the process at ``point`` of a load into ``destination`` (duckdb or postgres)."""
    if point == "chunk_read":
        batch_end = ranges.batch_end

        def dies_in_second_chunk(raw: bytes) -> tuple[int, Any]:
            found = batch_end(raw)
            if chunks.in_second() and chunks.batches_in_chunk == 1:
                die()
            return found

        ranges.batch_end = dies_in_second_chunk
    elif point == "chunk_job_committed":
        _after(PostgresParquetCopyJob if destination == "postgres" else DuckDbCopyJob, "run", chunks.in_second)
    elif point == "between_chunks":
        _after(MongoDltLoader, "_load_chunk", chunks.in_second)
    elif point == "after_extract":
        _after(dlt.Pipeline, "extract")
    elif point == "after_normalize":
        _after(dlt.Pipeline, "normalize")
    elif point == "job_uncommitted":
        _uncommitted_copy() if destination == "postgres" else _uncommitted_insert()
    elif point == "job_committed":
        _after(PostgresParquetCopyJob if destination == "postgres" else DuckDbCopyJob, "run")
    elif point == "merge_committed":
        _after(SqlLoadJob, "run")
    elif point == "load_recorded":
        _after(SqlJobClientBase, "complete_load")
    else:
        raise SystemExit(f"unknown point {point!r}; known: {', '.join(POINTS)}")


def run(scenario: dict[str, Any]) -> int:
    config = load_config(scenario["config"])
    database = config.databases[scenario["database"]]
    collection = database.collections[scenario["collection"]]
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=scenario["pipelines_dir"])
    point = scenario.get("point")
    chunks = _Chunks(scenario.get("count_file"))
    if point is not None:
        arm(point, config.destination.type, chunks)
    result = loader.load_collection(collection, database.dataset)
    if point is None:
        return 0 if result.succeeded else 4
    return 3 if result.succeeded else 4


def serve() -> None:
    # what the loader imports on its first load (pandas, pyarrow's parquet, sqlalchemy...): imported once here,
    # before any fork, instead of once per child
    for module in LAZILY_IMPORTED_BY_DLT:
        importlib.import_module(module)
    for line in sys.stdin:
        child = os.fork()
        if child == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # stdout carries the answers only
            os.environ.update(json.loads(line).get("env", {}))
            os._exit(run(json.loads(line)))
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status):
            sys.stdout.write(f"killed {os.WTERMSIG(status)}\n")
        else:
            sys.stdout.write(f"exited {os.WEXITSTATUS(status)}\n")
        sys.stdout.flush()


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(run(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
