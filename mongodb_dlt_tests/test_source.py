"""Our dlt MongoDB source against mongomock: the queries the server sees, conversions, what DuckDB gets."""

import copy
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import duckdb
import mongomock
import pendulum
import pytest
from bson import DBRef, MaxKey, MinKey, ObjectId, Regex
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.son import SON
from bson.timestamp import Timestamp
from bson.tz_util import utc as bson_utc

from mongodb_dlt.source import (
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    connect,
    convert_document,
    convert_value,
    looks_like_data_key,
    mongodb,
    mongodb_collection,
)

DATASET = "mongo"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@dataclass(frozen=True)
class Cursor:
    """Stands in for config.IncrementalConfig: the source only needs these two attributes."""

    cursor_field: str
    initial_value: Any = None


@dataclass
class Warehouse:
    """A DuckDB file and a dlt working folder, both under tmp_path."""

    path: Path
    pipelines_dir: Path

    def pipeline(self, name: str = "test_source") -> dlt.Pipeline:
        return dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(self.pipelines_dir),
            destination=dlt.destinations.duckdb(str(self.path)),
            dataset_name=DATASET,
        )

    def run(
        self, data: Any, name: str = "test_source", loader_file_format: str = "parquet"
    ) -> dict[str, int]:
        """Loads ``data`` and returns the rows per table the run normalized."""
        pipeline = self.pipeline(name)
        pipeline.run(data, loader_file_format=loader_file_format)  # type: ignore[arg-type]
        counts = pipeline.last_trace.last_normalize_info.row_counts
        return {table: rows for table, rows in counts.items() if not table.startswith("_dlt")}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    def tables(self) -> set[str]:
        rows = self.query(
            f"select table_name from information_schema.tables where table_schema = '{DATASET}'"
        )
        return {name for (name,) in rows if not name.startswith("_dlt")}

    def columns(self, table: str) -> dict[str, str]:
        rows = self.query(
            "select column_name, data_type from information_schema.columns"
            f" where table_schema = '{DATASET}' and table_name = '{table}'"
        )
        return {name: data_type for name, data_type in rows if not name.startswith("_dlt")}


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture
def mongo() -> mongomock.MongoClient:
    # tz_aware like the clients the source creates itself
    return mongomock.MongoClient(tz_aware=True)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(path=tmp_path / "warehouse.duckdb", pipelines_dir=tmp_path / "pipelines")


@pytest.fixture
def fresh_state(warehouse: Warehouse) -> dlt.Pipeline:
    """A resource iterated outside a run keeps incremental state in the active pipeline: make a new one."""
    return warehouse.pipeline()


@pytest.fixture
def finds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every find() the server saw: the filter and the keyword arguments (sort, projection, limit...)."""
    seen: list[dict[str, Any]] = []
    original = mongomock.collection.Collection.find

    def spy(self: mongomock.collection.Collection, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append({"collection": self.name, "filter": copy.deepcopy(filter), **copy.deepcopy(kwargs)})
        return original(self, filter, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "find", spy)
    return seen


def reads(finds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collection reads among the finds (type probes are find_one calls without a sort)."""
    return [call for call in finds if call.get("sort")]


# --- conversions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (7, 7),
        (0.5, 0.5),
        (True, True),
        (None, None),
        (Int64(2**40), 2**40),
        (ObjectId("65f1a2b3c4d5e6f708192a3b"), "65f1a2b3c4d5e6f708192a3b"),
        (Decimal128("12.34"), Decimal("12.34")),
        (Decimal128("1E+3"), Decimal("1E+3")),
        (Binary.from_uuid(UUID), str(UUID)),
        (Binary(UUID.bytes, 3), str(UUID)),
        (UUID, str(UUID)),
        (Binary(b"\x00\x01\xff", 0), "AAH/"),
        (b"\x00\x01\xff", "AAH/"),
        (Binary(b"abc", 128), "YWJj"),
        (Binary(b"short", 4), "c2hvcnQ="),
        (Regex("^a.*", "i"), '{"$regularExpression": {"pattern": "^a.*", "options": "i"}}'),
        (re.compile("^a", re.IGNORECASE), '{"$regularExpression": {"pattern": "^a", "options": "iu"}}'),
        (Code("f()"), '{"$code": "f()"}'),
        (Code("f(x)", {"x": 1}), '{"$code": "f(x)", "$scope": {"x": {"$numberInt": "1"}}}'),
        (Timestamp(1700000000, 3), '{"$timestamp": {"t": 1700000000, "i": 3}}'),
        (MinKey(), '{"$minKey": 1}'),
        (MaxKey(), '{"$maxKey": 1}'),
        (
            DBRef("users", ObjectId("65f1a2b3c4d5e6f708192a3b")),
            '{"$ref": "users", "$id": {"$oid": "65f1a2b3c4d5e6f708192a3b"}}',
        ),
        (DatetimeMS(-(10**15)), '{"$date": {"$numberLong": "-1000000000000000"}}'),
    ],
)
def test_convert_value(value: Any, expected: Any) -> None:
    converted = convert_value(value)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 3, 1, 12, 0),  # naive, as BSON dates are UTC
        datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        pendulum.datetime(2024, 3, 1, 12, 0, tz="UTC"),
        datetime(2024, 3, 1, 12, 0, tzinfo=bson_utc),  # what pymongo's tz_aware clients return
    ],
)
def test_dates_become_timezone_aware_utc(value: datetime) -> None:
    converted = convert_value(value)
    assert converted == T0
    assert type(converted) is datetime
    assert converted.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Decimal128 built from a float carries 34 digits; DECIMAL(38,9) keeps 9 of them
        (Decimal128("0.1000000000000000055511151231257827"), Decimal("0.100000000")),
        (Decimal128("2.0000000005"), Decimal("2.000000000")),  # half-even
        (Decimal128("-12345678901234567890123456789.5"), Decimal("-12345678901234567890123456789.5")),
        (Decimal128("123456789012345678901234567890"), None),  # 30 integer digits do not fit
        (Decimal("99999999999999999999999999999.9999999999"), None),  # rounds up to 30 digits
        (Decimal128("NaN"), None),
        (Decimal128("Infinity"), None),
        (Decimal128("-Infinity"), None),
    ],
)
def test_decimals_fit_the_decimal_column(value: Decimal128 | Decimal, expected: Decimal | None) -> None:
    assert convert_value(value) == expected


def test_convert_document_recurses_and_keeps_structure() -> None:
    oid = ObjectId()
    document = SON(
        [
            ("_id", oid),
            ("meta", {"owner": oid, "when": T0, "tags": [Int64(1), Decimal128("2.5")]}),
            ("items", [{"sku": "a", "ref": oid}, [Int64(3)]]),
        ]
    )
    assert convert_document(document) == {
        "_id": str(oid),
        "meta": {"owner": str(oid), "when": T0, "tags": [1, Decimal("2.5")]},
        "items": [{"sku": "a", "ref": str(oid)}, [3]],
    }


def test_document_id_that_is_a_document_stays_one_key() -> None:
    converted = convert_document({"_id": {"region": "eu", "n": 1}, "name": "x"})
    assert converted == {"_id": '{"region": "eu", "n": {"$numberInt": "1"}}', "name": "x"}


@pytest.mark.parametrize(
    ("key", "is_data"),
    [
        ("65f1a2b3c4d5e6f708192a3b", True),  # ObjectId
        ("d41d8cd98f00b204e9800998ecf8427e", True),  # md5
        ("da39a3ee5e6b4b0d3255bfef95601890afd80709", True),  # sha1
        (str(UUID), True),
        ("2024-03-01", True),
        ("2024-03", True),
        ("2024-03-01T12:00:00Z", True),
        ("42", True),
        ("-3.5", True),
        ("name", False),
        ("address_line_2", False),
        ("q1", False),
        ("deadbeef", False),
    ],
)
def test_data_keys(key: str, is_data: bool) -> None:
    assert looks_like_data_key(key) is is_data


# --- what the server is asked ------------------------------------------------------------------------------


def test_filter_projection_and_limit_reach_the_server(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]]
) -> None:
    mongo.db.people.insert_many(
        [{"_id": n, "name": f"p{n}", "kind": "a" if n % 2 else "b", "secret": "s"} for n in range(10)]
    )
    resource = mongodb_collection(
        None, "db", "people", client=mongo, filter={"kind": "a"}, projection=["name"], limit=3
    )

    documents = list(resource)

    assert documents == [{"_id": 1, "name": "p1"}, {"_id": 3, "name": "p3"}, {"_id": 5, "name": "p5"}]
    (read,) = reads(finds)
    assert read["filter"] == {"kind": "a"}
    assert read["projection"] == {"name": 1, "_id": 1}
    assert read["sort"] == [("_id", 1)]
    assert read["limit"] == 3


def test_projection_document_is_used_as_given(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]]
) -> None:
    mongo.db.people.insert_one({"_id": 1, "name": "p", "secret": "s"})

    documents = list(mongodb_collection(None, "db", "people", client=mongo, projection={"secret": 0}))

    assert documents == [{"_id": 1, "name": "p"}]
    assert reads(finds)[0]["projection"] == {"secret": 0}


def test_projection_keeps_the_cursor_without_path_collisions(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], fresh_state: dlt.Pipeline
) -> None:
    mongo.db.people.insert_one({"_id": 1, "meta": {"updated": T0}, "name": "p"})

    list(
        mongodb_collection(
            None, "db", "people", client=mongo, projection=["name"], incremental=Cursor("updated")
        )
    )
    list(
        mongodb_collection(
            None, "db", "people", client=mongo, projection=["meta"], incremental=Cursor("meta.updated")
        )
    )

    first, second = reads(finds)
    assert first["projection"] == {"name": 1, "_id": 1, "updated": 1}
    assert second["projection"] == {"meta": 1, "_id": 1}


def test_reads_in_pages_of_batch_size(mongo: mongomock.MongoClient, finds: list[dict[str, Any]]) -> None:
    mongo.db.events.insert_many([{"n": n} for n in range(25)])
    resource = mongodb_collection(None, "db", "events", client=mongo, batch_size=10)

    @dlt.transformer
    def page_sizes(page: list[dict[str, Any]]) -> Iterator[int]:
        if page:  # JSON hints travel on empty items of their own
            yield len(page)

    assert list(resource | page_sizes) == [10, 10, 5]
    assert reads(finds)[0]["batch_size"] == 10


def test_incremental_reads_only_new_documents(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    orders = mongo.db.orders
    orders.insert_many([{"n": n, "updated": T0 + timedelta(hours=n), "active": True} for n in range(5)])
    orders.insert_one({"n": 99, "updated": T0 + timedelta(hours=3), "active": False})
    orders.insert_one({"n": 98, "active": True})  # no cursor: never read incrementally

    def resource() -> Any:
        return mongodb_collection(
            None,
            "db",
            "orders",
            client=mongo,
            filter={"active": True},
            incremental=Cursor("updated", initial_value=T0 + timedelta(hours=1)),
        )

    assert warehouse.run(resource()) == {"orders": 4}
    first = reads(finds)[-1]
    assert first["filter"] == {"$and": [{"active": True}, {"updated": {"$gte": T0 + timedelta(hours=1)}}]}
    assert first["sort"] == [("updated", 1)]

    orders.insert_many([{"n": n, "updated": T0 + timedelta(hours=n), "active": True} for n in (5, 6)])
    # the boundary document (n=4) is read again but not loaded again
    assert warehouse.run(resource()) == {"orders": 2}
    second = reads(finds)[-1]
    last_value = second["filter"]["$and"][1]["updated"]["$gte"]
    assert last_value == T0 + timedelta(hours=4)
    assert type(last_value) is datetime and last_value.tzinfo is UTC

    assert warehouse.query(f"select n from {DATASET}.orders order by n") == [(n,) for n in range(1, 7)]


def test_incremental_without_initial_value_skips_documents_without_cursor(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], fresh_state: dlt.Pipeline
) -> None:
    mongo.db.orders.insert_many([{"n": 1, "updated": T0}, {"n": 2}, {"n": 3, "updated": None}])

    documents = list(mongodb_collection(None, "db", "orders", client=mongo, incremental=Cursor("updated")))

    assert [document["n"] for document in documents] == [1]
    assert reads(finds)[0]["filter"] == {"updated": {"$ne": None}}


def test_objectid_cursor_is_queried_as_objectid(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    ids = [ObjectId.from_datetime(T0 + timedelta(minutes=n)) for n in range(6)]
    mongo.db.events.insert_many([{"_id": oid, "n": n} for n, oid in enumerate(ids[:4])])

    def resource() -> Any:
        return mongodb_collection(None, "db", "events", client=mongo, incremental=Cursor("_id", ids[1]))

    assert warehouse.run(resource()) == {"events": 3}
    assert reads(finds)[-1]["filter"] == {"_id": {"$gte": ids[1]}}

    mongo.db.events.insert_many([{"_id": oid, "n": n} for n, oid in enumerate(ids[4:], start=4)])
    assert warehouse.run(resource()) == {"events": 2}
    query_value = reads(finds)[-1]["filter"]["_id"]["$gte"]
    assert query_value == ids[3] and type(query_value) is ObjectId
    assert warehouse.query(f"select count(*), min(n) from {DATASET}.events") == [(5, 1)]


def test_hex_string_cursor_stays_a_string(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], fresh_state: dlt.Pipeline
) -> None:
    hexes = ["65f1a2b3c4d5e6f708192a3b", "65f1a2b3c4d5e6f708192a3c"]
    mongo.db.events.insert_many([{"code": code} for code in hexes])

    documents = list(
        mongodb_collection(None, "db", "events", client=mongo, incremental=Cursor("code", hexes[1]))
    )

    assert [document["code"] for document in documents] == [hexes[1]]
    assert reads(finds)[0]["filter"] == {"code": {"$gte": hexes[1]}}


# --- what lands in DuckDB ----------------------------------------------------------------------------------


def test_bson_types_land_as_warehouse_types(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    oid = ObjectId("65f1a2b3c4d5e6f708192a3b")
    mongo.db.things.insert_one(
        {
            "_id": oid,
            "owner": ObjectId(),
            "when": T0,
            "price": Decimal128("12.34"),
            "precise": Decimal128("0.1000000000000000055511151231257827"),
            "not_a_number": Decimal128("NaN"),
            "count": Int64(2**40),
            "ratio": 0.5,
            "flag": True,
            "uuid": Binary.from_uuid(UUID),
            "blob": Binary(b"\x00\x01\xff", 0),
            "stamp": Timestamp(1700000000, 3),
        }
    )
    mongo.db.things.insert_one({"_id": ObjectId(), "not_a_number": Decimal128("1.5")})

    warehouse.run(mongodb_collection(None, "db", "things", client=mongo))

    columns = warehouse.columns("things")
    assert {name: columns[name] for name in ("_id", "owner", "uuid", "blob", "stamp")} == dict.fromkeys(
        ("_id", "owner", "uuid", "blob", "stamp"), "VARCHAR"
    )
    assert columns["when"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["price"] == columns["precise"] == columns["not_a_number"] == "DECIMAL(38,9)"
    assert columns["count"] == "BIGINT"
    assert columns["ratio"] == "DOUBLE"
    assert columns["flag"] == "BOOLEAN"
    row = warehouse.query(
        f'select _id, "when", price, precise, not_a_number, count, uuid, blob, stamp'
        f" from {DATASET}.things where _id = '{oid}'"
    )
    assert row == [
        (
            str(oid),
            T0,
            Decimal("12.34"),
            Decimal("0.1"),
            None,
            2**40,
            str(UUID),
            "AAH/",
            '{"$timestamp": {"t": 1700000000, "i": 3}}',
        )
    ]


@pytest.mark.parametrize(
    ("max_table_nesting", "tables", "json_columns"),
    [
        (0, {"docs"}, {("docs", "meta"), ("docs", "items")}),
        (1, {"docs", "docs__items"}, {("docs", "meta__a"), ("docs__items", "parts")}),
        (2, {"docs", "docs__items", "docs__items__parts"}, set()),
    ],
)
def test_nesting_is_bounded_by_max_table_nesting(
    mongo: mongomock.MongoClient,
    warehouse: Warehouse,
    max_table_nesting: int,
    tables: set[str],
    json_columns: set[tuple[str, str]],
) -> None:
    mongo.db.docs.insert_one(
        {"_id": 1, "meta": {"a": {"b": 1}}, "items": [{"sku": "x", "parts": [{"n": 1}, {"n": 2}]}]}
    )

    warehouse.run(mongodb_collection(None, "db", "docs", client=mongo, max_table_nesting=max_table_nesting))

    assert warehouse.tables() == tables
    found_json = {
        (table, column)
        for table in tables
        for column, data_type in warehouse.columns(table).items()
        if data_type == "JSON"
    }
    assert found_json == json_columns


def test_data_keyed_maps_are_stored_as_json(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    tiers = {str(ObjectId()): {"level": n, "since": T0} for n in range(500)}
    wide = {f"field_{n}": n for n in range(100)}  # ordinary keys, but more than max_object_keys
    mongo.db.accounts.insert_many(
        [
            {"_id": 1, "tiers": tiers, "wide": wide, "items": [{"sku": "a", "by_day": {"2024-03-01": 3}}]},
            {"_id": 2, "tiers": {}, "profile": {"name": "x"}},
        ]
    )

    warehouse.run(mongodb_collection(None, "db", "accounts", client=mongo, max_table_nesting=2))

    assert warehouse.tables() == {"accounts", "accounts__items"}
    assert warehouse.columns("accounts") == {
        "_id": "BIGINT",
        "tiers": "JSON",
        "wide": "JSON",
        "profile__name": "VARCHAR",
    }
    assert warehouse.columns("accounts__items") == {"sku": "VARCHAR", "by_day": "JSON"}
    some_key = next(iter(tiers))
    assert warehouse.query(
        f"select json_array_length(json_keys(tiers)), tiers->'$.\"{some_key}\".level' from {DATASET}.accounts"
        " where _id = 1"
    ) == [(500, "0")]


def test_a_path_lands_as_json_for_every_document_once_seen_as_data(
    mongo: mongomock.MongoClient, warehouse: Warehouse
) -> None:
    mongo.db.players.insert_many([{"_id": n, "scores": {"total": n}} for n in range(20)])
    mongo.db.players.insert_one({"_id": 20, "scores": {str(ObjectId()): 1}})  # third page

    warehouse.run(mongodb_collection(None, "db", "players", client=mongo, batch_size=8))
    mongo.db.players.insert_one({"_id": 21, "scores": {"total": 21}})
    warehouse.run(mongodb_collection(None, "db", "players", client=mongo, batch_size=8))

    assert warehouse.columns("players") == {"_id": "BIGINT", "scores": "JSON"}
    assert warehouse.query(f"select scores from {DATASET}.players where _id in (0, 21) order by _id") == [
        ('{"total":0}',),
        ('{"total":21}',),
    ]


def test_json_paths_are_stored_as_json(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.products.insert_one(
        {
            "_id": 1,
            "meta": {"attributes": {"color": "red", "size": 2}, "other": 5},
            "items": [{"sku": "a", "attrs": {"k": "v"}}],
            "tags": ["x", "y"],
        }
    )

    warehouse.run(
        mongodb_collection(
            None, "db", "products", client=mongo, json_paths=["meta.attributes", "items.attrs", "tags"]
        )
    )

    assert warehouse.tables() == {"products", "products__items"}
    assert warehouse.columns("products") == {
        "_id": "BIGINT",
        "meta__attributes": "JSON",
        "meta__other": "BIGINT",
        "tags": "JSON",
    }
    assert warehouse.columns("products__items") == {"sku": "VARCHAR", "attrs": "JSON"}
    assert warehouse.query(f"select meta__attributes, tags from {DATASET}.products") == [
        ('{"color":"red","size":2}', '["x","y"]')
    ]


def test_merge_loads_the_same_documents_once(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.carts.insert_many([{"n": n, "lines": [{"sku": "a"}, {"sku": "b"}]} for n in range(10)])

    warehouse.run(mongodb_collection(None, "db", "carts", client=mongo))
    warehouse.run(mongodb_collection(None, "db", "carts", client=mongo), loader_file_format="jsonl")
    mongo.db.carts.update_one({"n": 3}, {"$set": {"n": 33, "lines": [{"sku": "c"}]}})
    warehouse.run(mongodb_collection(None, "db", "carts", client=mongo))

    assert warehouse.query(f"select count(*), count(distinct _id), max(n) from {DATASET}.carts") == [
        (10, 10, 33)
    ]
    assert warehouse.query(f"select count(*) from {DATASET}.carts__lines") == [(19,)]


def test_extract_with_a_per_document_map_as_the_loader_does(
    mongo: mongomock.MongoClient, warehouse: Warehouse
) -> None:
    mongo.db.maps.insert_many([{"n": n, "by_id": {str(ObjectId()): n}} for n in range(5)])
    seen: list[Any] = []
    resource = mongodb_collection(None, "db", "maps", client=mongo, table_name="renamed", batch_size=2)
    resource.add_map(lambda document: seen.append(document) or document)

    pipeline = warehouse.pipeline()
    pipeline.extract(resource, loader_file_format="parquet")
    pipeline.normalize()
    pipeline.load()

    assert len(seen) == 5 and all(isinstance(document, dict) for document in seen)
    assert warehouse.columns("renamed") == {"_id": "VARCHAR", "n": "BIGINT", "by_id": "JSON"}


def test_source_over_all_collections(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.b.insert_one({"x": 1})
    mongo.db.a.insert_one({"x": 2})
    mongo.db["system.views"].insert_one({"x": 3})

    everything = mongodb(None, "db", client=mongo, batch_size=10)
    assert list(everything.resources) == ["a", "b"]
    assert warehouse.run(everything) == {"a": 1, "b": 1}
    assert list(mongodb(None, "db", ["b"], client=mongo).resources) == ["b"]


def test_connect_sets_conversion_options_and_respects_the_url() -> None:
    plain = connect("mongodb://127.0.0.1:1/")
    tuned = connect("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1500&uuidRepresentation=javaLegacy")
    try:
        assert plain.options.server_selection_timeout == DEFAULT_SERVER_SELECTION_TIMEOUT_MS / 1000
        assert plain.codec_options.tz_aware
        assert plain.codec_options.uuid_representation == UuidRepresentation.STANDARD
        assert tuned.options.server_selection_timeout == 1.5
        assert tuned.codec_options.uuid_representation == UuidRepresentation.JAVA_LEGACY
    finally:
        plain.close()
        tuned.close()


def test_a_resource_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="connection_url or a client"):
        mongodb_collection(None, "db", "orders")
