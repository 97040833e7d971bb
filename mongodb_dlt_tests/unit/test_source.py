"""Our dlt MongoDB source against mongomock: the queries the server sees and what DuckDB holds afterwards."""

from __future__ import annotations

import contextlib
import copy
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import duckdb
import mongomock
import pyarrow as pa
import pytest
from bson import MaxKey, MinKey, ObjectId, Regex
from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp

from mongodb_dlt.config import IncrementalConfig
from mongodb_dlt.extract import workers
from mongodb_dlt.extract.mongo import DEFAULT_SERVER_SELECTION_TIMEOUT_MS, connect
from mongodb_dlt.extract.source import mongodb, mongodb_collection
from mongodb_dlt.results import ExtractStats
from mongodb_dlt.testing import patch_mongomock_bson_ordering

DATASET = "mongo"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def Cursor(cursor_field: str, initial_value: Any = None) -> IncrementalConfig:
    """An incremental setting as the YAML gives it."""
    return IncrementalConfig(cursor_field=cursor_field, initial_value=initial_value)


@dataclass
class Warehouse:
    """A DuckDB file and a dlt working folder, both under tmp_path. Queries share one read-only connection, opened
    by the first query after a load and closed before the next pipeline opens the file (``close`` at the end)."""

    path: Path
    pipelines_dir: Path
    reader: duckdb.DuckDBPyConnection | None = field(default=None, init=False, repr=False)

    def pipeline(self, name: str = "test_source") -> dlt.Pipeline:
        self.close()  # dlt opens the file read-write: DuckDB refuses that while this process reads it read-only
        return dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(self.pipelines_dir),
            destination=dlt.destinations.duckdb(str(self.path)),
            dataset_name=DATASET,
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.reader is None:
            self.reader = duckdb.connect(str(self.path), read_only=True)
        return self.reader.execute(sql).fetchall()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def tables(self) -> set[str]:
        rows = self.query(f"select table_name from information_schema.tables where table_schema = '{DATASET}'")
        return {name for (name,) in rows if not name.startswith("_dlt")}

    def columns(self, table: str) -> dict[str, str]:
        """Data columns and their DuckDB types (our link and key columns left out)."""
        rows = self.query(
            "select column_name, data_type from information_schema.columns"
            f" where table_schema = '{DATASET}' and table_name = '{table}' order by ordinal_position"
        )
        return {name: data_type for name, data_type in rows if not name.startswith(("_dlt", "_mongo"))}


def load(warehouse: Warehouse, mongo: mongomock.MongoClient, collection: str, **options: Any) -> ExtractStats:
    """One load of ``db.<collection>`` through the source; returns what it read and wrote."""
    stats = ExtractStats()
    options.setdefault("conversion_processes", 0)
    resource = mongodb_collection(None, "db", collection, client=mongo, stats=stats, **options)
    warehouse.pipeline().run(resource)
    return stats


def load_together(
    warehouse: Warehouse, mongo: mongomock.MongoClient, collections: dict[str, dict[str, Any]]
) -> dict[str, ExtractStats]:
    """One dlt run loading several collections of ``db``, each with its own options into tables of its own; returns
    what each read and wrote. The cases of a parametrized test share the run: a dlt run costs about half a second
    however little it loads, and each collection's reading, tables and state are its own (they are keyed by the
    collection's table name), so a case sees what it would see loaded alone."""
    stats = {collection: ExtractStats() for collection in collections}
    resources = [
        mongodb_collection(
            None, "db", collection, client=mongo, stats=stats[collection], conversion_processes=0, **options
        )
        for collection, options in collections.items()
    ]
    warehouse.pipeline().run(resources)
    return stats


@pytest.fixture(autouse=True, scope="module")
def _nothing_to_restore() -> Iterator[None]:
    """The test pipelines' warehouses are always new (or were loaded by the same working folder): skip dlt's look
    for a state to restore from them before each run (a tenth of these tests' time)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINES__TEST_SOURCE__RESTORE_FROM_DESTINATION", "false")
        yield


@pytest.fixture
def mongo() -> mongomock.MongoClient:
    patch_mongomock_bson_ordering()  # an incremental read's conditions hold a Timestamp, MinKey and MaxKey
    return mongomock.MongoClient(tz_aware=True)


def shared_warehouse(tmp_path_factory: pytest.TempPathFactory, name: str) -> Warehouse:
    """A warehouse for the cases of one parametrized test, loaded once by a module-scoped fixture."""
    folder = tmp_path_factory.mktemp(name)
    return Warehouse(path=folder / "warehouse.duckdb", pipelines_dir=folder / "pipelines")


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    made = Warehouse(path=tmp_path / "warehouse.duckdb", pipelines_dir=tmp_path / "pipelines")
    with contextlib.closing(made):
        yield made


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


def cursor_conditions(query: dict[str, Any]) -> list[dict[str, Any]]:
    """An incremental read's conditions on its cursor, one per type bracket, without the user's filter."""
    return list((query["$and"][1] if "$and" in query else query)["$or"])


# --- what the server is asked ------------------------------------------------------------------------------


def test_filter_projection_and_limit_reach_the_server(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    mongo.db.people.insert_many(
        [{"_id": n, "name": f"p{n}", "kind": "a" if n % 2 else "b", "secret": "s"} for n in range(10)]
    )

    load(warehouse, mongo, "people", filter={"kind": "a"}, projection=["name"], limit=3)

    assert warehouse.query(f"select _id, name from {DATASET}.people order by _id") == [(1, "p1"), (3, "p3"), (5, "p5")]
    assert warehouse.columns("people") == {"_id": "BIGINT", "name": "VARCHAR"}
    (read,) = reads(finds)
    assert read["filter"] == {"kind": "a"}
    assert read["projection"] == {"name": 1, "_id": 1}
    assert read["sort"] == [("_id", 1)]
    assert read["limit"] == 3


def test_projection_document_is_used_as_given(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    mongo.db.people.insert_one({"_id": 1, "name": "p", "secret": "s"})

    load(warehouse, mongo, "people", projection={"secret": 0})

    assert warehouse.columns("people") == {"_id": "BIGINT", "name": "VARCHAR"}
    assert reads(finds)[0]["projection"] == {"secret": 0}


def test_projection_keeps_the_cursor_without_path_collisions(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    mongo.db.people.insert_one({"_id": 1, "meta": {"updated": T0}, "updated": T0, "name": "p"})

    load(warehouse, mongo, "people", projection=["name"], incremental=Cursor("updated"))
    load(warehouse, mongo, "people", projection=["meta"], incremental=Cursor("meta.updated"), table_name="p2")

    first, second = reads(finds)
    assert first["projection"] == {"name": 1, "_id": 1, "updated": 1}
    assert second["projection"] == {"meta": 1, "_id": 1}


def test_reads_in_batches_of_batch_size(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    mongo.db.events.insert_many([{"n": n} for n in range(25)])
    batches: list[int] = []
    stats = ExtractStats(on_progress=batches.append)

    warehouse.pipeline().run(
        mongodb_collection(None, "db", "events", client=mongo, batch_size=10, stats=stats, conversion_processes=0)
    )

    assert batches == [10, 20, 25]
    assert reads(finds)[0]["batch_size"] == 10


def test_the_source_yields_arrow_tables_only(mongo: mongomock.MongoClient) -> None:
    mongo.db.events.insert_many([{"n": n, "tags": ["a"]} for n in range(3)])

    items = list(mongodb_collection(None, "db", "events", client=mongo, conversion_processes=0))

    assert items and all(isinstance(item, pa.Table) for item in items)


# --- incremental -------------------------------------------------------------------------------------------


def test_incremental_reads_only_new_documents_and_never_loads_the_boundary_twice(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    orders = mongo.db.orders
    orders.insert_many([{"n": n, "updated": T0 + timedelta(hours=n), "active": True} for n in range(5)])
    orders.insert_one({"n": 99, "updated": T0 + timedelta(hours=3), "active": False})
    orders.insert_one({"n": 98, "active": True})  # no cursor: never read incrementally
    options: dict[str, Any] = {
        "filter": {"active": True},
        "incremental": Cursor("updated", initial_value=T0 + timedelta(hours=1)),
        "write_disposition": "append",  # append shows a boundary document loaded twice; merge would hide it
    }

    assert load(warehouse, mongo, "orders", **options).rows == {"orders": 4}
    first = reads(finds)[-1]
    assert first["filter"]["$and"][0] == {"active": True}
    assert {"updated": {"$gte": T0 + timedelta(hours=1)}} in cursor_conditions(first["filter"])
    assert first["sort"] == [("updated", 1)]

    orders.insert_many([{"n": n, "updated": T0 + timedelta(hours=n), "active": True} for n in (5, 6)])
    orders.insert_one({"n": 44, "updated": T0 + timedelta(hours=4), "active": True})  # a new one at the boundary
    stats = load(warehouse, mongo, "orders", **options)
    assert stats.rows == {"orders": 3} and stats.skipped_at_boundary == 1
    second = reads(finds)[-1]
    assert {"updated": {"$gte": T0 + timedelta(hours=4)}} in cursor_conditions(second["filter"])

    assert load(warehouse, mongo, "orders", **options).rows == {}  # nothing new: nothing loaded
    assert warehouse.query(f"select n from {DATASET}.orders order by n") == [(n,) for n in (1, 2, 3, 4, 5, 6, 44)]


def test_incremental_state_keeps_the_cursor_type_and_shows_it_readably(
    mongo: mongomock.MongoClient, warehouse: Warehouse
) -> None:
    mongo.db.orders.insert_many([{"n": n, "updated": T0 + timedelta(hours=n)} for n in range(3)])

    load(warehouse, mongo, "orders", incremental=Cursor("updated"))

    state = warehouse.pipeline().state["sources"]["test_source"]["resources"]["orders"]["incremental"]["updated"]
    assert state["last_value"] == (T0 + timedelta(hours=2)).isoformat()
    assert state["brackets"]["date"]["last_value"] == state["last_value"]
    assert state["brackets"]["date"]["last_value_bson"] == '{"$date": {"$numberLong": "1709301600000"}}'
    assert len(state["brackets"]["date"]["keys_at_last_value"]) == 1


def test_incremental_without_initial_value_skips_documents_without_cursor(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    mongo.db.orders.insert_many([{"n": 1, "updated": T0}, {"n": 2}, {"n": 3, "updated": None}])

    load(warehouse, mongo, "orders", incremental=Cursor("updated"))

    assert warehouse.query(f"select n from {DATASET}.orders") == [(1,)]
    assert {"updated": {"$type": "date"}} in cursor_conditions(reads(finds)[0]["filter"])


def test_objectid_cursor_is_queried_as_objectid(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    ids = [ObjectId.from_datetime(T0 + timedelta(minutes=n)) for n in range(6)]
    mongo.db.events.insert_many([{"_id": oid, "n": n} for n, oid in enumerate(ids[:4])])

    assert load(warehouse, mongo, "events", incremental=Cursor("_id", str(ids[1]))).rows == {"events": 3}
    assert {"_id": {"$gte": ids[1]}} in cursor_conditions(reads(finds)[-1]["filter"])

    mongo.db.events.insert_many([{"_id": oid, "n": n} for n, oid in enumerate(ids[4:], start=4)])
    assert load(warehouse, mongo, "events", incremental=Cursor("_id", str(ids[1]))).rows == {"events": 2}
    (query_value,) = [
        condition["_id"]["$gte"]
        for condition in cursor_conditions(reads(finds)[-1]["filter"])
        if isinstance(condition["_id"].get("$gte"), ObjectId)
    ]
    assert query_value == ids[3]
    assert warehouse.query(f"select count(*), min(n) from {DATASET}.events") == [(5, 1)]


def test_hex_string_cursor_stays_a_string(
    mongo: mongomock.MongoClient, finds: list[dict[str, Any]], warehouse: Warehouse
) -> None:
    hexes = ["65f1a2b3c4d5e6f708192a3b", "65f1a2b3c4d5e6f708192a3c"]
    mongo.db.events.insert_many([{"code": code} for code in hexes])

    load(warehouse, mongo, "events", incremental=Cursor("code", hexes[1]))

    assert warehouse.query(f"select code from {DATASET}.events") == [(hexes[1],)]
    assert {"code": {"$gte": hexes[1]}} in cursor_conditions(reads(finds)[0]["filter"])


# --- types: every value in a column of its own type ---------------------------------------------------------

BSON_TYPE_CASES: list[tuple[str, Any, str, Any]] = [
    # field, BSON value, DuckDB type, value read back
    ("text", "héllo", "VARCHAR", "héllo"),
    ("int32", 7, "BIGINT", 7),
    ("int64", Int64(2**62 + 1), "BIGINT", 2**62 + 1),
    ("double", 0.5, "DOUBLE", 0.5),
    ("flag", True, "BOOLEAN", True),
    ("when", T0, "TIMESTAMP WITH TIME ZONE", T0),
    ("oid", ObjectId("65f1a2b3c4d5e6f708192a3b"), "VARCHAR", "65f1a2b3c4d5e6f708192a3b"),
    ("price", Decimal128("12.34"), "DECIMAL(38,9)", Decimal("12.34")),
    ("precise", Decimal128("0.1000000000"), "DECIMAL(38,9)", Decimal("0.1")),
    ("huge", Decimal128("1E+40"), "VARCHAR", "1E+40"),
    ("tiny", Decimal128("1.5E-10"), "VARCHAR", "1.5E-10"),
    ("digits34", Decimal128("1234567890123456789012345678901234"), "VARCHAR", "1234567890123456789012345678901234"),
    ("dnan", Decimal128("NaN"), "VARCHAR", "NaN"),
    ("uuid", Binary.from_uuid(UUID), "VARCHAR", str(UUID)),
    ("blob", Binary(b"\x00\x01\xff", 0), "BLOB", b"\x00\x01\xff"),
    ("md5", Binary(b"\x01" * 16, 5), "BLOB", b"\x01" * 16),
    ("stamp", Timestamp(1700000000, 3), "VARCHAR", '{"$timestamp": {"t": 1700000000, "i": 3}}'),
    ("pattern", Regex("^a", "i"), "VARCHAR", '{"$regularExpression": {"pattern": "^a", "options": "i"}}'),
    ("code", Code("x = 1"), "VARCHAR", '{"$code": "x = 1"}'),
    ("low", MinKey(), "VARCHAR", '{"$minKey": 1}'),
    ("high", MaxKey(), "VARCHAR", '{"$maxKey": 1}'),
]


def test_each_bson_type_lands_in_a_column_of_its_own_type(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.things.insert_one({"_id": 1, **{name: value for name, value, _, _ in BSON_TYPE_CASES}})

    load(warehouse, mongo, "things")

    columns = warehouse.columns("things")
    assert {name: columns[name] for name, *_ in BSON_TYPE_CASES} == {name: kind for name, _, kind, _ in BSON_TYPE_CASES}
    names = ", ".join(f'"{name}"' for name, *_ in BSON_TYPE_CASES)
    (row,) = warehouse.query(f"select {names} from {DATASET}.things")
    assert dict(zip([name for name, *_ in BSON_TYPE_CASES], row, strict=True)) == {
        name: expected for name, _, _, expected in BSON_TYPE_CASES
    }


WRITE_DISPOSITIONS = ["append", "replace", "merge"]


@pytest.fixture(scope="module")
def floats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """The same doubles in one collection per write disposition (``floats_<disposition>``), loaded together."""
    mongo = mongomock.MongoClient(tz_aware=True)
    values = [float("nan"), float("inf"), float("-inf"), -0.0, 1.5]
    for write_disposition in WRITE_DISPOSITIONS:
        mongo.db[f"floats_{write_disposition}"].insert_many([{"_id": n, "x": value} for n, value in enumerate(values)])
    warehouse = shared_warehouse(tmp_path_factory, "floats")
    load_together(warehouse, mongo, {f"floats_{wd}": {"write_disposition": wd} for wd in WRITE_DISPOSITIONS})
    yield warehouse
    warehouse.close()


@pytest.mark.parametrize("write_disposition", WRITE_DISPOSITIONS)
def test_non_finite_and_negative_zero_doubles_stay_doubles(floats: Warehouse, write_disposition: str) -> None:
    table = f"floats_{write_disposition}"

    assert floats.columns(table) == {"_id": "BIGINT", "x": "DOUBLE"}
    landed = [value for (value,) in floats.query(f"select x from {DATASET}.{table} order by _id")]
    assert math.isnan(landed[0]) and landed[1:3] == [float("inf"), float("-inf")]
    assert landed[3] == 0.0 and landed[4] == 1.5
    # DuckDB's window function (dlt's merge de-duplication) drops the sign of zero; plain inserts keep it
    assert math.copysign(1.0, landed[3]) == (1.0 if write_disposition == "merge" else -1.0)


# Values of the issue: each came after a first value of another type and was coerced or lost before.
DRIFT_CASES: list[tuple[Any, Any, str, Any]] = [
    # first value, later value, variant column, what the variant holds
    (501, "00501", "zip__v_string", "00501"),
    (31, "0x1F", "zip__v_string", "0x1F"),
    (42, " 42 ", "zip__v_string", " 42 "),
    (True, "false", "zip__v_string", "false"),
    (False, "yes", "zip__v_string", "yes"),
    (2.5, Int64(2**62 + 1), "zip__v_int64", 2**62 + 1),
    (1, 2.5, "zip__v_double", 2.5),
    ("a", 1, "zip__v_int64", 1),
    (1, True, "zip__v_bool", True),
    (T0, "2024-03-01", "zip__v_string", "2024-03-01"),
    (ObjectId("65f1a2b3c4d5e6f708192a3b"), "65f1a2b3c4d5e6f708192a3b", "zip__v_string", "65f1a2b3c4d5e6f708192a3b"),
    (Decimal128("1.5"), 1.5, "zip__v_double", 1.5),
]




def drift_collection(case: int, across_runs: bool) -> str:
    return f"places_{case}_{'two_runs' if across_runs else 'one_run'}"


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """Each case of DRIFT_CASES twice, in collections of its own (``drift_collection``): the first value, then the
    later one; read in one run, or the first value loaded by a run of its own before. Every case shares the same
    two runs: the first loads the first values of the "two runs" collections, the second reads every collection
    in batches of one document."""
    mongo = mongomock.MongoClient(tz_aware=True)
    cases = range(len(DRIFT_CASES))
    for case, (first, *_) in enumerate(DRIFT_CASES):
        for across_runs in (False, True):
            mongo.db[drift_collection(case, across_runs)].insert_one({"_id": 1, "zip": first})
    warehouse = shared_warehouse(tmp_path_factory, "drift")
    load_together(warehouse, mongo, {drift_collection(case, True): {} for case in cases})
    for case, (_, later, *_) in enumerate(DRIFT_CASES):
        for across_runs in (False, True):
            mongo.db[drift_collection(case, across_runs)].insert_one({"_id": 2, "zip": later})
    every = [drift_collection(case, across_runs) for case in cases for across_runs in (False, True)]
    load_together(warehouse, mongo, {collection: {"batch_size": 1} for collection in every})
    yield warehouse
    warehouse.close()


@pytest.mark.parametrize(
    "case", range(len(DRIFT_CASES)), ids=[f"{first!r} then {later!r}" for first, later, *_ in DRIFT_CASES]
)
@pytest.mark.parametrize("across_runs", [False, True], ids=["one run", "two runs"])
def test_a_drifting_field_keeps_every_value_in_a_variant_column(
    drifted: Warehouse, case: int, across_runs: bool
) -> None:
    _, _, variant, expected = DRIFT_CASES[case]
    places = drift_collection(case, across_runs)

    rows = drifted.query(f'select _id, zip, "{variant}" from {DATASET}.{places} order by _id')
    assert rows[1] == (2, None, expected)
    assert rows[0][2] is None and rows[0][1] is not None


def test_field_names_that_normalize_alike_never_merge(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    keys = ["Name", "name", "NAME", "a b", "a_b", "a-b", "A B", "名前", "名字", "😀", "_dlt_id", "_mongo_key", "café"]
    mongo.db.people.insert_one({"_id": 1, **{key: f"value of {key}" for key in keys}})

    stats = load(warehouse, mongo, "people")

    paths = {path.rsplit(" (", 1)[0]: column for column, path in stats.columns["people"].items()}
    assert set(paths) == {"_id", *keys}
    assert len(set(paths.values())) == len(paths)  # one column per field
    assert paths["Name"] == "name" and paths["a b"] == "a_b" and paths["café"] == "cafe"
    assert paths["name"].startswith("name_") and paths["_dlt_id"].startswith("_dlt_id_")
    columns = ", ".join(f'"{paths[key]}"' for key in keys)
    (row,) = warehouse.query(f"select {columns} from {DATASET}.people")
    assert list(row) == [f"value of {key}" for key in keys]
    # the names are stable: a second run with the fields in another order lands in the same columns
    mongo.db.people.insert_one({"_id": 2, **{key: f"second {key}" for key in reversed(keys)}})
    load(warehouse, mongo, "people")
    (row,) = warehouse.query(f"select {columns} from {DATASET}.people where _id = 2")
    assert list(row) == [f"second {key}" for key in keys]


def test_the_column_map_is_in_the_dlt_schema(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.people.insert_many([{"_id": 1, "Zip": 1, "tags": ["a"]}, {"_id": 2, "Zip": "x"}])

    load(warehouse, mongo, "people")

    columns = warehouse.pipeline().default_schema.tables["people"]["columns"]
    assert columns["zip"]["x-mongodb-path"] == '["Zip"]' and columns["zip"]["x-mongodb-type"] == "int64"
    assert columns["zip__v_string"]["x-mongodb-type"] == "string" and columns["zip__v_string"]["x-mongodb-variant"]
    assert warehouse.pipeline().default_schema.tables["people__tags"]["x-mongodb-table"] == '[["tags"]]'


# --- _id: typed identity ------------------------------------------------------------------------------------

ID_PAIRS: list[tuple[Any, Any]] = [
    (1, "1"),
    (ObjectId("65f1a2b3c4d5e6f708192a3b"), "65f1a2b3c4d5e6f708192a3b"),
    (Binary.from_uuid(UUID), str(UUID)),
    (True, "true"),
    ("a", None),
    (1, 2.5),
]




@pytest.fixture(scope="module")
def typed_ids(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Warehouse, dict[str, ExtractStats]]]:
    """Each pair of ID_PAIRS in a collection of its own (``things_<n>``), all loaded together, one document of
    each pair changed, and all loaded again (merge); with what the first run read."""
    mongo = mongomock.MongoClient(tz_aware=True)
    names = [f"things_{n}" for n in range(len(ID_PAIRS))]
    for name, (one, other) in zip(names, ID_PAIRS, strict=True):
        mongo.db[name].insert_many([{"_id": one, "v": 1}, {"_id": other, "v": 2, "tags": ["x"]}])
    warehouse = shared_warehouse(tmp_path_factory, "ids")
    first = load_together(warehouse, mongo, {name: {} for name in names})
    for name, (_, other) in zip(names, ID_PAIRS, strict=True):
        mongo.db[name].update_one({"_id": other}, {"$set": {"v": 3}})
    load_together(warehouse, mongo, {name: {} for name in names})  # merge: each document replaces only its own row
    yield warehouse, first
    warehouse.close()


@pytest.mark.parametrize("pair", range(len(ID_PAIRS)), ids=[f"{one!r} and {other!r}" for one, other in ID_PAIRS])
def test_ids_of_different_types_are_different_documents(
    typed_ids: tuple[Warehouse, dict[str, ExtractStats]], pair: int
) -> None:
    warehouse, first = typed_ids
    things = f"things_{pair}"

    assert first[things].rows[things] == 2
    assert warehouse.query(f"select v from {DATASET}.{things} order by v") == [(1,), (3,)]
    assert warehouse.query(f"select count(*) from {DATASET}.{things}__tags") == [(1,)]


def test_numbers_equal_as_ids_are_one_document_as_in_mongodb(
    mongo: mongomock.MongoClient, warehouse: Warehouse
) -> None:
    mongo.db.things.insert_one({"_id": 1, "v": "int"})
    load(warehouse, mongo, "things")
    mongo.db.things.delete_one({"_id": 1})
    mongo.db.things.insert_one({"_id": 1.0, "v": "double"})  # a unique index holds 1 and 1.0 as one key

    load(warehouse, mongo, "things")

    assert warehouse.query(f"select _mongo_key, v from {DATASET}.things") == [("n:1", "double")]


def test_a_field_named_like_our_row_id_never_replaces_it(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.carts.insert_many(
        [{"_id": n, "_dlt_id": "same", "lines": [{"sku": f"{n}-{i}"} for i in range(2)]} for n in range(3)]
    )

    load(warehouse, mongo, "carts")
    mongo.db.carts.update_one({"_id": 1}, {"$set": {"lines": [{"sku": "new"}]}})
    load(warehouse, mongo, "carts")

    assert warehouse.query(f"select count(distinct _dlt_id), count(*) from {DATASET}.carts") == [(3, 3)]
    assert warehouse.query(f"select sku from {DATASET}.carts__lines order by sku") == [
        ("0-0",),
        ("0-1",),
        ("2-0",),
        ("2-1",),
        ("new",),
    ]


# --- nested data ----------------------------------------------------------------------------------------------


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

    load(warehouse, mongo, "docs", max_table_nesting=max_table_nesting)

    assert warehouse.tables() == tables
    found_json = {
        (table, column) for table in tables for column, kind in warehouse.columns(table).items() if kind == "JSON"
    }
    assert found_json == json_columns


def test_child_tables_link_to_their_parent_and_root(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.orders.insert_one(
        {"_id": 7, "items": [{"sku": "a", "tags": ["x", "y"]}, {"sku": "b", "tags": []}], "matrix": [[1, 2], [3]]}
    )

    load(warehouse, mongo, "orders", max_table_nesting=3)

    assert warehouse.query(
        f"select i.sku, t.value, t._dlt_list_idx from {DATASET}.orders o"
        f" join {DATASET}.orders__items i on i._dlt_parent_id = o._dlt_id"
        f" join {DATASET}.orders__items__tags t on t._dlt_parent_id = i._dlt_id and t._dlt_root_id = o._dlt_id"
        " order by 1, 3"
    ) == [("a", "x", 0), ("a", "y", 1)]
    assert warehouse.query(
        f"select l._dlt_list_idx, v.value from {DATASET}.orders__matrix l"
        f" join {DATASET}.orders__matrix__list v on v._dlt_parent_id = l._dlt_id order by 1, v._dlt_list_idx"
    ) == [(0, 1), (0, 2), (1, 3)]


def test_merge_keeps_child_tables_exact_when_arrays_change(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    carts = mongo.db.carts
    carts.insert_many([{"_id": n, "lines": [{"sku": f"{n}-{i}"} for i in range(3)], "tags": ["t"]} for n in range(5)])
    load(warehouse, mongo, "carts")

    carts.update_one({"_id": 0}, {"$push": {"lines": {"sku": "0-3"}}})  # grows
    carts.update_one({"_id": 1}, {"$set": {"lines": [{"sku": "1-0"}]}})  # shrinks
    carts.update_one({"_id": 2}, {"$set": {"lines": []}})  # empties
    carts.update_one({"_id": 3}, {"$unset": {"lines": "", "tags": ""}})  # disappears
    load(warehouse, mongo, "carts")
    load(warehouse, mongo, "carts")  # and loading the same documents again changes nothing

    assert warehouse.query(f"select count(*) from {DATASET}.carts") == [(5,)]
    assert warehouse.query(f"select sku from {DATASET}.carts__lines order by sku") == [
        ("0-0",),
        ("0-1",),
        ("0-2",),
        ("0-3",),
        ("1-0",),
        ("4-0",),
        ("4-1",),
        ("4-2",),
    ]
    assert warehouse.query(f"select count(*) from {DATASET}.carts__tags") == [(4,)]
    orphans = warehouse.query(
        f"select count(*) from {DATASET}.carts__lines l left join {DATASET}.carts c on l._dlt_parent_id = c._dlt_id"
        " where c._dlt_id is null"
    )
    assert orphans == [(0,)]
    assert warehouse.query(f"select count(*) from {DATASET}.carts__lines where _mongo_deleted") == [(0,)]


def test_data_keyed_maps_are_stored_as_json(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    tiers = {str(ObjectId()): {"level": n, "since": T0} for n in range(500)}
    wide = {f"field_{n}": n for n in range(100)}  # ordinary keys, but more than max_object_keys
    mongo.db.accounts.insert_many(
        [
            {"_id": 1, "tiers": tiers, "wide": wide, "items": [{"sku": "a", "by_day": {"2024-03-01": 3}}]},
            {"_id": 2, "profile": {"name": "x"}},
        ]
    )

    load(warehouse, mongo, "accounts")

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
        f"select json_array_length(json_keys(tiers)), tiers->'$.\"{some_key}\".since' from {DATASET}.accounts"
        " where _id = 1"
    ) == [(500, '{"$date":"2024-03-01T12:00:00Z"}')]


def test_once_a_path_lands_as_json_later_documents_store_it_as_json(
    mongo: mongomock.MongoClient, warehouse: Warehouse
) -> None:
    mongo.db.players.insert_many([{"_id": n, "scores": {"total": n}} for n in range(20)])
    mongo.db.players.insert_one({"_id": 20, "scores": {str(ObjectId()): 1}})  # third batch
    mongo.db.players.insert_one({"_id": 21, "scores": {"total": 21}})  # fourth batch

    load(warehouse, mongo, "players", batch_size=8)
    assert warehouse.columns("players") == {"_id": "BIGINT", "scores__total": "BIGINT", "scores": "JSON"}
    # the batches before the data-keyed document flattened the path; the one holding it stores it whole
    assert warehouse.query(
        f"select _id, scores__total, scores from {DATASET}.players where _id in (0, 20, 21) order by _id"
    ) == [
        (0, 0, None),
        (20, None, f'{{"{next(iter(mongo.db.players.find_one({"_id": 20})["scores"]))}":1}}'),
        (21, 21, None),
    ]

    mongo.db.players.insert_one({"_id": 22, "scores": {"total": 22}})
    load(warehouse, mongo, "players", batch_size=8)
    # from the next run on, every document stores the path whole
    assert warehouse.query(
        f"select _id, scores__total, scores from {DATASET}.players where _id in (0, 22) order by _id"
    ) == [
        (0, None, '{"total":0}'),
        (22, None, '{"total":22}'),
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

    load(warehouse, mongo, "products", json_paths=["meta.attributes", "items.attrs", "tags"])

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


# --- loads, processes, sources --------------------------------------------------------------------------------


def test_worker_processes_convert_the_same_as_this_process(mongo: mongomock.MongoClient, tmp_path: Path) -> None:
    mongo.db.orders.insert_many(
        [{"_id": n, "n": n if n % 3 else str(n), "items": [{"q": n}, {"q": n + 0.5}]} for n in range(50)]
    )
    landed: dict[int, Any] = {}
    while not workers._workers_ready():  # started on first use; batches go to them once they answer
        time.sleep(0.05)
    for processes in (0, 2):
        with contextlib.closing(Warehouse(tmp_path / f"w{processes}.duckdb", tmp_path / f"p{processes}")) as warehouse:
            stats = load(warehouse, mongo, "orders", batch_size=7, conversion_processes=processes)
            in_workers = 8 - workers.BATCHES_BEFORE_WORKERS
            assert stats.batches == 8 and stats.batches_in_workers == (0 if processes == 0 else in_workers)
            landed[processes] = (
                warehouse.columns("orders"),
                warehouse.query(f"select * exclude (_dlt_id, _dlt_load_id) from {DATASET}.orders order by _id"),
                warehouse.query(
                    f"select * exclude (_dlt_id, _dlt_parent_id, _dlt_root_id, _dlt_load_id) from {DATASET}"
                    ".orders__items order by _mongo_root_key, _dlt_list_idx"
                ),
            )
    assert landed[0][0] == {"_id": "BIGINT", "n": "VARCHAR", "n__v_int64": "BIGINT"}
    assert landed[0] == landed[2]


def test_merge_loads_the_same_documents_once(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.carts.insert_many([{"n": n, "lines": [{"sku": "a"}, {"sku": "b"}]} for n in range(10)])

    load(warehouse, mongo, "carts")
    load(warehouse, mongo, "carts")
    mongo.db.carts.update_one({"n": 3}, {"$set": {"n": 33, "lines": [{"sku": "c"}]}})
    load(warehouse, mongo, "carts")

    assert warehouse.query(f"select count(*), count(distinct _id), max(n) from {DATASET}.carts") == [(10, 10, 33)]
    assert warehouse.query(f"select count(*) from {DATASET}.carts__lines") == [(19,)]


@pytest.fixture(scope="module")
def unmerged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """The same carts in ``carts_append`` and ``carts_replace``, each loaded twice with its write disposition (the
    two collections share both runs)."""
    mongo = mongomock.MongoClient(tz_aware=True)
    dispositions = ["append", "replace"]
    for write_disposition in dispositions:
        mongo.db[f"carts_{write_disposition}"].insert_many(
            [{"_id": n, "lines": [{"sku": "a"}] if n % 2 else []} for n in range(4)]
        )
    warehouse = shared_warehouse(tmp_path_factory, "unmerged")
    for _ in range(2):
        load_together(warehouse, mongo, {f"carts_{wd}": {"write_disposition": wd} for wd in dispositions})
    yield warehouse
    warehouse.close()


@pytest.mark.parametrize("write_disposition", ["append", "replace"])
def test_append_and_replace_write_no_marker_rows(unmerged: Warehouse, write_disposition: str) -> None:
    carts = f"carts_{write_disposition}"

    expected = {"append": [(8, 4)], "replace": [(4, 2)]}[write_disposition]
    assert [
        (
            unmerged.query(f"select count(*) from {DATASET}.{carts}")[0][0],
            unmerged.query(f"select count(*) from {DATASET}.{carts}__lines")[0][0],
        )
    ] == expected
    assert "_mongo_deleted" not in {
        name
        for (name,) in unmerged.query(
            f"select column_name from information_schema.columns where table_name = '{carts}__lines'"
        )
    }


def test_source_over_all_collections(mongo: mongomock.MongoClient, warehouse: Warehouse) -> None:
    mongo.db.b.insert_one({"x": 1})
    mongo.db.a.insert_one({"x": 2})
    mongo.db["system.views"].insert_one({"x": 3})

    everything = mongodb(None, "db", client=mongo, batch_size=10, conversion_processes=0)
    assert list(everything.resources) == ["a", "b"]
    warehouse.pipeline().run(everything)
    assert warehouse.tables() == {"a", "b"}
    assert list(mongodb(None, "db", ["b"], client=mongo).resources) == ["b"]


def test_connect_sets_our_defaults_and_respects_the_url() -> None:
    plain = connect("mongodb://127.0.0.1:1/")
    tuned = connect("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1500&appname=mine")
    try:
        assert plain.options.server_selection_timeout == DEFAULT_SERVER_SELECTION_TIMEOUT_MS / 1000
        assert plain.options.pool_options.metadata["application"]["name"] == "mongodb-dlt"
        assert tuned.options.server_selection_timeout == 1.5
        assert tuned.options.pool_options.metadata["application"]["name"] == "mine"
    finally:
        plain.close()
        tuned.close()


def test_a_resource_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="connection_url or a client"):
        mongodb_collection(None, "db", "orders")


def test_the_c_walk_is_built() -> None:
    """`make` builds mongodb_dlt/extract/_fastwalk.c with the package. Without a C compiler the package still works,
    on the Python walk alone (about four times slower to convert), and this test says so."""
    from mongodb_dlt.extract import bson_arrow

    assert bson_arrow._fastwalk is not None, "mongodb_dlt.extract._fastwalk was not built: is a C compiler installed?"
