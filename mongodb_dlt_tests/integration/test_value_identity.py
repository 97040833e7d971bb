"""Values keep their identity from the stand-in, over a real socket, into DuckDB: numbers that MongoDB holds apart
stay apart under merge, and what bson's decoder alone would lose (a Decimal128 negative zero, a Symbol, a key
repeated in one document) lands exactly or fails the collection by name.

mongomock cannot hold a Decimal128 ``_id`` (it keys its store by the ``_id`` and Decimal128 is unhashable), so the
numbers are the primary key of another field, ``k``: ``_mongo_key`` is the same identity of whatever field keys a
collection. A Symbol and a repeated key cannot be written by pymongo either: they travel as the raw bytes of a
sub-document (a ``RawBSONDocument`` value, which mongomock keeps and the stand-in sends as it is).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument

from mongodb_dlt.config import CollectionConfig, load_config
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn


@pytest.fixture(autouse=True)
def _uri_of_the_standin(standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", standin.uri)


def _orders(tmp_path: Path, options: str) -> tuple[MongoDltLoader, CollectionConfig]:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  write_disposition: merge\n  batch_size: 4\n"
        f"destination: {{type: duckdb, path: {tmp_path / 'w.duckdb'}}}\n"
        f"databases:\n  shop:\n    collections:\n      orders: {options}\n"
    )
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))
    return loader, config.databases["shop"].collections["orders"]


def _raw_document(*elements: bytes) -> RawBSONDocument:
    body = b"".join(elements) + b"\x00"
    return RawBSONDocument((len(body) + 4).to_bytes(4, "little") + body)


def _element(type_byte: int, key: str, payload: bytes) -> bytes:
    return bytes([type_byte]) + key.encode() + b"\x00" + payload


def _string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return len(data).to_bytes(4, "little") + data


NUMBERS = [0.1, Decimal128("0.1"), 9.99, Decimal128("9.99"), 0.30000000000000004, Decimal128("0.30000000000000004")]


def test_a_double_and_a_decimal_of_one_text_are_two_documents_under_merge(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    """MongoDB holds the double 0.1 (0.1000000000000000055511151231257827...) and Decimal128 0.1 apart: six keys."""
    standin.client.shop.orders.insert_many([{"_id": number, "k": value} for number, value in enumerate(NUMBERS)])
    loader, orders = _orders(tmp_path, "{primary_key: k}")
    for _ in range(2):  # the first load appends, the second merges into it
        result = loader.load_collection(orders, "mongo_shop")
        assert result.succeeded, result.error
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as warehouse:
            rows = warehouse.execute("select _id, _mongo_key from mongo_shop.orders order by _id").fetchall()
        assert [number for number, _ in rows] == list(range(6))
        assert len({key for _, key in rows}) == 6, rows
        assert rows[0][1] == "n:0.1000000000000000055511151231257827021181583404541015625"
        assert rows[1][1] == "n:0.1"


def test_negative_zero_decimals_and_a_symbol_land_exactly(tmp_path: Path, standin: MongoStandIn) -> None:
    symbol = _raw_document(_element(0x0E, "s", _string("hello")))
    standin.client.shop.orders.insert_many([
        {"_id": 1, "d": Decimal128("0.00"), "wrap": symbol},
        {"_id": 2, "d": Decimal128("-0"), "wrap": {"s": "hello"}},
        {"_id": 3, "d": Decimal128("-0E-6176")},
        {"_id": 4, "d": Decimal128("-0.00"), "items": [Decimal128("-0"), symbol]},
    ])
    loader, orders = _orders(tmp_path, "{}")
    result = loader.load_collection(orders, "mongo_shop")
    assert result.succeeded, result.error
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as warehouse:
        rows = warehouse.execute(
            "select _id, d::varchar, d__v_decimal_text, wrap__s, wrap__s__v_string from mongo_shop.orders order by _id"
        ).fetchall()
        items = warehouse.execute(
            "select value, s from mongo_shop.orders__items order by _dlt_list_idx"  # -0 is its first type
        ).fetchall()
    assert rows == [
        (1, "0.000000000", None, '{"$symbol": "hello"}', None),  # the first type of wrap.s owns the plain column
        (2, None, "-0", None, "hello"),
        (3, None, "-0E-6176", None, None),
        (4, None, "-0.00", None, None),
    ]
    assert items == [("-0", None), (None, '{"$symbol": "hello"}')]


def test_a_key_repeated_in_a_document_fails_the_collection_by_id_and_key(tmp_path: Path, standin: MongoStandIn) -> None:
    repeated = _raw_document(_element(0x10, "x", (1).to_bytes(4, "little")), _element(0x02, "x", _string("two")))
    standin.client.shop.orders.insert_many([{"_id": 1, "wrap": {"x": 1}}, {"_id": 2, "wrap": repeated}])
    loader, orders = _orders(tmp_path, "{}")
    result = loader.load_collection(orders, "mongo_shop")
    assert not result.succeeded
    assert 'document _id={"$numberInt": "2"}, field \'wrap.x\'' in (result.error or ""), result.error
    assert "appears more than once" in (result.error or "")
