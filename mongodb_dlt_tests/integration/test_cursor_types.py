"""Incremental cursors over fields of several BSON types, through the stand-in over a real socket: MongoDB's $gte
matches one type bracket only, so the cursor keeps a position per bracket and every document is loaded exactly
once, whatever its cursor holds, whatever came first, and across an upgrade from the single-value state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest
from bson import Binary, ObjectId, json_util

from mongodb_dlt.config import CollectionConfig, load_config
from mongodb_dlt.extract import cursor
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.results import CollectionLoadResult
from mongodb_dlt.testing import MongoStandIn

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def incremental(cursor_field: str, write_disposition: str) -> str:
    return f"{{incremental: {{cursor_field: {cursor_field}}}, write_disposition: {write_disposition}}}"


@pytest.fixture(autouse=True)
def _uri_of_the_standin(standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", standin.uri)


class Orders:
    """``shop.orders`` loaded into a DuckDB file of its own with the given collection options (batches of 3
    documents, so batches straddle the type brackets)."""

    def __init__(self, tmp_path: Path, standin: MongoStandIn, options: str) -> None:
        self.collection = standin.client.shop.orders
        self.duckdb_path = tmp_path / "w.duckdb"
        path = tmp_path / "databases.yaml"
        path.write_text(
            "defaults:\n  retries: {max_attempts: 1}\n  batch_size: 3\n"
            f"destination: {{type: duckdb, path: {self.duckdb_path}}}\n"
            f"databases:\n  shop:\n    collections:\n      orders: {options}\n"
        )
        config = load_config(path)
        self.loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))
        self.config: CollectionConfig = config.databases["shop"].collections["orders"]

    def load(self) -> CollectionLoadResult:
        result = self.loader.load_collection(self.config, "mongo_shop")
        assert result.succeeded, result.error
        return result

    def landed(self) -> tuple[int, int]:
        """Rows in the warehouse, and distinct documents among them."""
        with duckdb.connect(str(self.duckdb_path), read_only=True) as warehouse:
            ((rows, documents),) = warehouse.execute(
                "select count(*), count(distinct _mongo_key) from mongo_shop.orders"
            ).fetchall()
        return rows, documents


def test_a_date_cursor_with_a_numeric_initial_value_loads_every_date(tmp_path: Path, standin: MongoStandIn) -> None:
    orders = Orders(tmp_path, standin, "{incremental: {cursor_field: ts, initial_value: 5}, write_disposition: append}")
    orders.collection.insert_many([{"_id": n, "ts": T0 + dt.timedelta(hours=n)} for n in range(10)])
    orders.collection.insert_many([{"_id": 10, "ts": 3}, {"_id": 11, "ts": 7}])

    # initial_value 5 starts the numbers at 5 (7 is read, 3 is not); the dates, another bracket, are read whole
    assert orders.load().rows_loaded == 11
    assert orders.load().rows_loaded == 0
    assert orders.landed() == (11, 11)


@pytest.mark.parametrize("write_disposition", ["append", "merge"])
def test_an_id_cursor_over_ints_strings_and_object_ids_reads_every_type(
    tmp_path: Path, standin: MongoStandIn, write_disposition: str
) -> None:
    orders = Orders(tmp_path, standin, incremental("_id", write_disposition))
    ids: list[Any] = [1, 2, 3, 4, "a", "b", "c", ObjectId.from_datetime(T0), ObjectId.from_datetime(T0 + HOUR)]
    orders.collection.insert_many([{"_id": key} for key in ids])
    assert orders.load().rows_loaded == 9

    # new documents of every type, each after its own type's last value
    new_ids: list[Any] = [5, 4.5, "d", "bb", ObjectId.from_datetime(T0 + dt.timedelta(days=1))]
    orders.collection.insert_many([{"_id": key} for key in new_ids])
    assert orders.load().rows_loaded == 4  # "bb" sorts before "c", the last string read: incremental skips it
    assert orders.load().rows_loaded == 0
    assert orders.landed() == (13, 13)


@pytest.mark.parametrize("write_disposition", ["append", "merge"])
def test_types_added_between_runs_are_read_once(tmp_path: Path, standin: MongoStandIn, write_disposition: str) -> None:
    orders = Orders(tmp_path, standin, incremental("v", write_disposition))
    orders.collection.insert_many([{"_id": n, "v": n} for n in range(4)])
    orders.collection.insert_many([{"_id": 90}, {"_id": 91, "v": None}])  # no cursor: never read (README)
    assert orders.load().rows_loaded == 4

    later: list[Any] = [
        "text",
        {"nested": 1},
        Binary(b"\x01"),
        ObjectId.from_datetime(T0),
        True,
        T0,
        json_util.loads('{"$minKey": 1}'),
        json_util.loads('{"$maxKey": 1}'),
        4,  # a number after the last one read
        3,  # the last number read, a document not loaded yet: read, and told apart by its key
    ]
    orders.collection.insert_many([{"_id": 10 + n, "v": value} for n, value in enumerate(later)])
    assert orders.load().rows_loaded == len(later)

    orders.collection.insert_many([{"_id": 30, "v": 9}, {"_id": 31, "v": "zzz"}, {"_id": 32, "v": T0 + HOUR}])
    assert orders.load().rows_loaded == 3
    assert orders.load().rows_loaded == 0
    assert orders.landed() == (17, 17)


def test_an_array_on_the_cursor_fails_the_collection_naming_the_document(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    orders = Orders(tmp_path, standin, incremental("v", "append"))
    orders.collection.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": [2, 3]}, {"_id": 3, "v": 4}])
    result = orders.loader.load_collection(orders.config, "mongo_shop")
    assert not result.succeeded
    assert "document with key n:2 holds an array in incremental cursor_field 'v'" in (result.error or "")
    assert "{$not: {$type: array}}" in (result.error or "")


def _save_as_version_1_1(self: cursor.CursorState) -> None:
    """What the version before brackets kept: one last value (where its sort ended) and the keys at it."""
    last = self.positions[max(self.positions)]
    self.state["last_value"] = cursor.display_cursor(last.value)
    self.state["last_value_bson"] = json_util.dumps(last.value, json_options=cursor._CURSOR_JSON)
    self.state["keys_at_last_value"] = sorted(last.keys)


@pytest.mark.parametrize("write_disposition", ["append", "merge"])
def test_state_of_the_single_value_layout_migrates_without_loading_anything_twice(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch, write_disposition: str
) -> None:
    orders = Orders(tmp_path, standin, incremental("_id", write_disposition))
    orders.collection.insert_many([{"_id": key} for key in (1, 2, 3, "a", "b", "c")])
    with monkeypatch.context() as earlier_version:
        earlier_version.setattr(cursor.CursorState, "save", _save_as_version_1_1)
        assert orders.load().rows_loaded == 6  # its first run read every type; its state kept "c" only

    orders.collection.insert_many([{"_id": key} for key in ("d", ObjectId.from_datetime(T0))])
    second = orders.load()
    # append: the numbers start after their newest (3), which the earlier version may have loaded;
    # merge: they are read again, which changes nothing in the table
    assert second.rows_loaded == (2 if write_disposition == "append" else 5)
    orders.collection.insert_many([{"_id": key} for key in (4, "e")])
    assert orders.load().rows_loaded == 2
    assert orders.load().rows_loaded == 0
    assert orders.landed() == (10, 10)
