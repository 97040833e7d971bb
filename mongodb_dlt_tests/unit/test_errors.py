"""Error messages that point the right way: a full disk is named with its path and never retried, and a failed schema
update names its cause without dlt's guess that parallel pipelines collided."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import dlt
import duckdb
import pyarrow.parquet
import pymongo.errors
import pytest
from dlt.common.destination.exceptions import SchemaUpdateError
from dlt.destinations.exceptions import DatabaseTerminalException, DatabaseTransientException
from dlt.pipeline.exceptions import PipelineStepFailed

from mongodb_dlt.config import load_config
from mongodb_dlt.errors import describe_error, disk_full, is_transient
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn

DLT_CONCURRENCY_HINT = "several pipelines"
SCHEMA = "mongodb_dlt__shop__orders"


def raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """``error`` as Python leaves it once raised from ``cause`` (with __cause__ and __context__ set)."""
    try:
        raise error from cause
    except BaseException as caught:
        return caught


def wrapped_by_dlt(tmp_path: Path, step: str, database_error: Exception, *, schema_update: str | None) -> BaseException:
    """``database_error`` wrapped as dlt's load step wraps one: in its DatabaseException, in a SchemaUpdateError for
    the tables ``schema_update`` names (the database's own error wrapped by a DuckDB sql client), and in
    PipelineStepFailed."""
    error = raised(database_error)
    if schema_update is not None:
        wrapper = DatabaseTransientException if isinstance(database_error, duckdb.IOException) else (
            DatabaseTerminalException
        )
        error = raised(wrapper(database_error), error)
        tables = [schema_update] if schema_update else []
        error = raised(SchemaUpdateError.from_cause(SCHEMA, tables, error), error)  # type: ignore[arg-type]
    pipeline = dlt.pipeline("errors_probe", pipelines_dir=str(tmp_path / "pipelines"))
    return raised(PipelineStepFailed(pipeline, step, "1234.5", error), error)  # type: ignore[arg-type]


WAL = "/data/warehouse.duckdb.wal"
PARQUET = "/work/.mongodb_dlt/pipelines/orders/normalized/orders.1.parquet"

# step, the database's (or Python's) error, the tables of the schema update it broke ("" for creating the dataset,
# None for none), then what the message must say
CASES = [
    pytest.param(
        "load",
        duckdb.IOException(f'IO Error: Could not write file "{WAL}": No space left on device'),
        "orders",
        ["disk full: IOException: ", "No space left on device", WAL],
        id="duckdb-disk-full-in-a-schema-update",
    ),
    pytest.param(
        "load",
        duckdb.IOException(f'IO Error: Could not write file "{WAL}": No space left on device'),
        "",
        ["disk full: IOException: ", WAL],
        id="duckdb-disk-full-creating-the-dataset",
    ),
    pytest.param(
        "normalize",
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), PARQUET),
        None,
        ["disk full: OSError: ", os.strerror(errno.ENOSPC), PARQUET],
        id="python-write-on-a-full-disk",
    ),
    pytest.param(
        "extract",
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), PARQUET),
        None,
        ["disk full: OSError: ", os.strerror(errno.EDQUOT), PARQUET],
        id="quota-exceeded",
    ),
    pytest.param(
        "load",
        duckdb.ConstraintException("Constraint Error: NOT NULL constraint failed: t__a._mongo_key"),
        "t__a",
        [
            f"dlt could not update tables t__a in the dataset of schema {SCHEMA}: ConstraintException: "
            "Constraint Error: NOT NULL constraint failed: t__a._mongo_key"
        ],
        id="table-two-sources-write",
    ),
]


@pytest.mark.parametrize(("step", "database_error", "schema_update", "says"), CASES)
def test_the_message_names_the_cause_without_dlts_concurrency_hint(
    tmp_path: Path, step: str, database_error: Exception, schema_update: str | None, says: list[str]
) -> None:
    error = wrapped_by_dlt(tmp_path, step, database_error, schema_update=schema_update)
    message = describe_error(error)
    for fragment in says:
        assert fragment in message, message
    assert DLT_CONCURRENCY_HINT not in message and "retry is safe" not in message, message
    assert ("disk full" in message) == (disk_full(error) is not None)
    assert not is_transient(error)


def test_a_full_disk_is_not_transient_even_when_met_while_handling_a_transient_error() -> None:
    reconnect = raised(pymongo.errors.AutoReconnect("connection closed"))
    assert is_transient(reconnect)
    try:
        try:
            raise reconnect
        except pymongo.errors.AutoReconnect:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
    except OSError as full:
        full.__suppress_context__ = False  # as an error raised inside the handler leaves it
        assert full.__context__ is reconnect
        assert not is_transient(full)
    assert not is_transient(raised(RuntimeError("extract failed"), OSError(errno.ENOSPC, "No space left on device")))


def test_a_load_that_fills_the_disk_fails_once_naming_where_it_writes(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.client.shop.orders.insert_many([{"n": i} for i in range(20)])
    monkeypatch.setenv("MONGODB_URI", standin.uri)
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  retries: {max_attempts: 3, backoff_seconds: 0.01}\n"
        f"destination: {{type: duckdb, path: {tmp_path / 'w.duckdb'}}}\n"
        "databases:\n  shop: [orders]\n"
    )
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))

    def full(*args: object, **kwargs: object) -> None:
        # what write(2) reports on a full disk: an errno and no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pyarrow.parquet.ParquetWriter, "write_table", full)
    result = loader.load_collection(config.databases["shop"].collections["orders"], "mongo_shop")
    assert not result.succeeded and result.attempts == 1
    message = result.error or ""
    assert message.startswith("disk full: OSError: "), message
    assert os.strerror(errno.ENOSPC) in message
    assert str(loader.destination.working_dir) in message and str(tmp_path / "w.duckdb") in message
    assert DLT_CONCURRENCY_HINT not in message
