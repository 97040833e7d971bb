"""The MongoDB stand-in, exercised the way the product uses it: real pymongo over a real socket."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import mongomock
import pymongo
import pymongo.errors
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

from mongodb_dlt.testing import SAMPLE_COLLECTIONS, MongoStandIn, populate_sample_data


@pytest.fixture
def client(standin: MongoStandIn) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(standin.uri, serverSelectionTimeoutMS=5000) as connection:
        yield connection


def seed_numbers(
    standin: MongoStandIn, count: int, database: str = "db", collection: str = "numbers"
) -> None:
    standin.client[database][collection].insert_many(
        [
            {"_id": i, "n": i, "parity": "even" if i % 2 == 0 else "odd", "sub": {"k": i * 10}}
            for i in range(count)
        ]
    )


def finds(standin: MongoStandIn, database: str, collection: str, name: str = "find") -> list[dict]:
    return [command for command in standin.commands_seen(database, collection) if name in command]


def test_handshake_reports_a_writable_standalone(client: pymongo.MongoClient) -> None:
    assert client.admin.command("ping")["ok"] == 1.0
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True and hello["maxWireVersion"] >= 9
    assert "setName" not in hello and hello.get("msg") != "isdbgrid"
    assert client.topology_description.topology_type_name == "Single"
    assert client.server_info()["version"].startswith("6.")


def test_find_with_filter_projection_sort_skip_and_limit(
    standin: MongoStandIn, client: pymongo.MongoClient
) -> None:
    seed_numbers(standin, 50)
    found = list(
        client.db.numbers.find({"parity": "odd", "n": {"$gte": 10}}, {"n": 1, "sub.k": 1, "_id": 0})
        .sort("n", pymongo.DESCENDING)
        .skip(2)
        .limit(3)
    )
    assert found == [{"n": 45, "sub": {"k": 450}}, {"n": 43, "sub": {"k": 430}}, {"n": 41, "sub": {"k": 410}}]
    assert client.db.numbers.find_one({"_id": 7}) == {"_id": 7, "n": 7, "parity": "odd", "sub": {"k": 70}}
    assert client.db.missing.find_one() is None


def test_get_more_serves_the_rest_in_batches(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 250)
    assert [doc["n"] for doc in client.db.numbers.find(batch_size=40).sort("n", 1)] == list(range(250))
    get_mores = finds(standin, "db", "numbers", "getMore")
    assert len(get_mores) == 6 and all(command["batchSize"] == 40 for command in get_mores)

    first = client.db.command("find", "numbers", sort={"n": 1})["cursor"]
    assert len(first["firstBatch"]) == 101 and first["id"] != 0 and first["ns"] == "db.numbers"
    rest = client.db.command("getMore", first["id"], collection="numbers", batchSize=100)["cursor"]
    assert [doc["n"] for doc in rest["nextBatch"]] == list(range(101, 201)) and rest["id"] == first["id"]
    last = client.db.command("getMore", first["id"], collection="numbers")["cursor"]
    assert len(last["nextBatch"]) == 49 and last["id"] == 0
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        client.db.command("getMore", first["id"], collection="numbers")
    assert failure.value.code == 43


def test_kill_cursors_closes_server_side_cursors(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 100)
    cursor = client.db.numbers.find(batch_size=10)
    next(cursor)
    cursor.close()
    [kill] = finds(standin, "db", "numbers", "killCursors")
    assert len(kill["cursors"]) == 1

    cursor_id = client.db.command("find", "numbers", batchSize=5)["cursor"]["id"]
    reply = client.db.command("killCursors", "numbers", cursors=[cursor_id, Int64(12345)])
    assert reply["cursorsKilled"] == [cursor_id] and reply["cursorsNotFound"] == [12345]
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        client.db.command("getMore", cursor_id, collection="numbers")
    assert failure.value.code == 43


def test_aggregate_count_and_distinct(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 30)
    pipeline = [
        {"$match": {"n": {"$lt": 20}}},
        {"$group": {"_id": "$parity", "total": {"$sum": "$n"}}},
        {"$sort": {"_id": 1}},
    ]
    assert list(client.db.numbers.aggregate(pipeline)) == [
        {"_id": "even", "total": 90},
        {"_id": "odd", "total": 100},
    ]
    assert len(list(client.db.numbers.aggregate([{"$sort": {"n": -1}}], batchSize=4))) == 30
    assert len(finds(standin, "db", "numbers", "getMore")) == 7
    assert client.db.numbers.count_documents({"parity": "odd"}) == 15
    assert client.db.numbers.count_documents({}, skip=5, limit=10) == 10
    assert client.db.numbers.estimated_document_count() == 30
    assert sorted(client.db.numbers.distinct("parity")) == ["even", "odd"]


def test_list_collections_and_databases(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 1)
    seed_numbers(standin, 1, collection="letters")
    seed_numbers(standin, 1, database="other")
    assert sorted(client.db.list_collection_names()) == ["letters", "numbers"]
    [numbers] = list(client.db.list_collections(filter={"name": "numbers"}))
    assert numbers["type"] == "collection" and numbers["options"] == {}
    assert {"db", "other"} <= set(client.list_database_names())
    assert {entry["name"] for entry in client.list_databases()} >= {"db", "other", "admin"}
    assert [entry["name"] for entry in client.list_databases(filter={"name": "other"})] == ["other"]


def test_writes_reach_the_mongomock_client(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    people = client.db.people
    people.insert_many([{"_id": i, "name": f"p{i}", "age": 20 + i} for i in range(5)])
    assert people.update_one({"_id": 1}, {"$set": {"age": 99}}).modified_count == 1
    assert people.update_many({"age": {"$lt": 23}}, {"$inc": {"age": 1}}).modified_count == 2
    assert people.replace_one({"_id": 4}, {"name": "replaced"}).matched_count == 1
    assert people.update_one({"_id": 9}, {"$set": {"name": "new"}}, upsert=True).upserted_id == 9
    assert people.delete_one({"_id": 3}).deleted_count == 1
    assert people.delete_many({"age": {"$gte": 21}}).deleted_count == 3
    assert sorted(standin.client.db.people.distinct("_id")) == [4, 9]
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        people.insert_one({"_id": 4})
    with pytest.raises(pymongo.errors.BulkWriteError) as bulk:
        people.insert_many([{"_id": 20}, {"_id": 4}, {"_id": 21}])
    assert bulk.value.details["nInserted"] == 1 and bulk.value.details["writeErrors"][0]["code"] == 11000

    client.db.create_collection("empty")
    assert "empty" in standin.client.db.list_collection_names()
    with pytest.raises(pymongo.errors.CollectionInvalid):
        client.db.create_collection("empty")
    client.db.drop_collection("people")
    client.db.drop_collection("never_existed")
    assert "people" not in standin.client.db.list_collection_names()


def test_errors_are_server_errors(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 3)
    with pytest.raises(pymongo.errors.OperationFailure) as unknown:
        client.db.command("frobnicate", 1)
    assert unknown.value.code == 59 and "frobnicate" in str(unknown.value)
    with pytest.raises(pymongo.errors.OperationFailure) as bad_operator:
        client.db.numbers.find_one({"n": {"$frobnicate": 1}})
    assert bad_operator.value.code == 2 and "$frobnicate" in str(bad_operator.value)
    with pytest.raises(pymongo.errors.OperationFailure) as bad_stage:
        list(client.db.numbers.aggregate([{"$frobnicate": {}}]))
    assert bad_stage.value.code == 2
    assert client.db.numbers.count_documents({}) == 3


def test_every_bson_type_round_trips_with_its_type(
    standin: MongoStandIn, client: pymongo.MongoClient
) -> None:
    values = {
        "object_id": ObjectId(),
        "datetime": datetime(2024, 2, 29, 23, 59, 59, 123000),
        "decimal": Decimal128("12345.6789"),
        "int64": Int64(2**40),
        "int32": 42,
        "double": 2.5,
        "bool": True,
        "null": None,
        "string": "héllo",
        "uuid": Binary.from_uuid(uuid.UUID("12345678-1234-5678-1234-567812345678")),
        "binary": b"\x00\x01\xff",
        "regex": Regex("^abc", "i"),
        "code": Code("function() { return 1; }"),
        "code_with_scope": Code("function() { return x; }", {"x": 1}),
        "timestamp": Timestamp(1_700_000_000, 7),
        "min_key": MinKey(),
        "max_key": MaxKey(),
        "dbref": DBRef("users", ObjectId(), "otherdb"),
        "document": {"nested": {"deeper": [1, "two"]}},
        "array": [1, 2.0, "three"],
        "array_of_documents": [{"a": 1}, {"a": 2}],
    }
    standin.client.db.types.insert_one({"_id": 1, **values})
    read = client.db.types.find_one({"_id": 1})
    for key, value in values.items():
        assert type(read[key]) is type(value), key
        assert read[key] == value, key
    assert read["uuid"].subtype == 4 and read["uuid"].as_uuid() == uuid.UUID(
        "12345678-1234-5678-1234-567812345678"
    )
    assert read["code_with_scope"].scope == {"x": 1}

    with_uuids = pymongo.MongoClient(standin.uri, uuidRepresentation="standard")
    assert with_uuids.db.types.find_one({"_id": 1})["uuid"] == uuid.UUID(
        "12345678-1234-5678-1234-567812345678"
    )
    with_uuids.close()


def test_filters_and_sorts_on_types_mongomock_cannot_order(
    standin: MongoStandIn, client: pymongo.MongoClient
) -> None:
    standin.client.db.mixed.insert_many(
        [
            {"_id": 1, "amount": Decimal128("10.50"), "ts": Timestamp(100, 2), "bound": MaxKey()},
            {"_id": 2, "amount": Decimal128("2.25"), "ts": Timestamp(100, 1), "bound": MinKey()},
            {"_id": 3, "amount": 7, "ts": Timestamp(50, 9), "bound": 5},
        ]
    )
    mixed = client.db.mixed
    assert [d["_id"] for d in mixed.find({"amount": {"$gte": Decimal128("5")}}).sort("amount", 1)] == [3, 1]
    assert [d["_id"] for d in mixed.find().sort("ts", -1)] == [1, 2, 3]
    assert [d["_id"] for d in mixed.find().sort("bound", 1)] == [2, 3, 1]


def test_sample_data_is_deterministic_and_has_every_bson_type() -> None:
    first, second = mongomock.MongoClient(), mongomock.MongoClient()
    counts = populate_sample_data(first, seed=7, scale=0.1)
    assert populate_sample_data(second, seed=7, scale=0.1) == counts
    assert counts == {
        db: {name: round(n * 0.1) for name, n in cols.items()} for db, cols in SAMPLE_COLLECTIONS.items()
    }
    seen: set[str] = set()
    for database, collections in counts.items():
        for name, count in collections.items():
            documents = list(first[database][name].find())
            assert documents == list(second[database][name].find())
            assert len(documents) == count
            for document in documents:
                _collect_types(document, seen)
    assert seen >= {
        "ObjectId",
        "datetime",
        "Decimal128",
        "Int64",
        "int",
        "float",
        "bool",
        "NoneType",
        "str",
        "uuid",
        "bytes",
        "Regex",
        "Code",
        "CodeWithScope",
        "Timestamp",
        "MinKey",
        "MaxKey",
        "DBRef",
        "dict",
        "list",
        "list_of_dict",
    }
    dates = [t["date"] for t in first.sample_analytics.transactions.find()]
    assert min(dates) >= datetime(2019, 1, 1) and max(dates) < datetime(2025, 1, 1)
    tier_keys = [key for c in first.sample_analytics.customers.find() for key in c["tier_and_details"]]
    assert tier_keys and all(re.fullmatch(r"[0-9a-f]{32}", key) for key in tier_keys)
    assert populate_sample_data(first, seed=8, scale=0.1) == counts
    assert first.sample_mflix.movies.count_documents({}) == counts["sample_mflix"]["movies"]


def _collect_types(value: object, seen: set[str]) -> None:
    if isinstance(value, Binary) and value.subtype == 4:
        seen.add("uuid")
    elif isinstance(value, Code) and value.scope is not None:
        seen.add("CodeWithScope")
    else:
        seen.add(type(value).__name__)
    if isinstance(value, dict):
        for item in value.values():
            _collect_types(item, seen)
    elif isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            seen.add("list_of_dict")
        for item in value:
            _collect_types(item, seen)


def test_failed_collection_answers_unauthorized(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 5)
    seed_numbers(standin, 5, collection="siblings")
    standin.fail_collection("db", "numbers")
    for read in (
        lambda: client.db.numbers.find_one(),
        lambda: list(client.db.numbers.aggregate([])),
        lambda: client.db.numbers.count_documents({}),
        lambda: client.db.numbers.estimated_document_count(),
    ):
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            read()
        assert failure.value.code == 13 and "not authorized on db" in str(failure.value)
    assert client.db.siblings.count_documents({}) == 5

    standin.fail_collection("db", "numbers", code=8000, message="quota exceeded", times=1)
    with pytest.raises(pymongo.errors.OperationFailure, match="quota exceeded"):
        client.db.numbers.find_one()
    assert client.db.numbers.count_documents({}) == 5

    standin.fail_collection("db", "numbers")
    standin.clear_faults()
    assert client.db.numbers.count_documents({}) == 5


def test_dropped_connection_mid_cursor_then_the_retry_succeeds(
    standin: MongoStandIn, client: pymongo.MongoClient
) -> None:
    seed_numbers(standin, 100)
    standin.drop_connection("db", "numbers", after_batches=2, times=1)
    received = []
    with pytest.raises(pymongo.errors.AutoReconnect):
        for document in client.db.numbers.find(batch_size=10):
            received.append(document["n"])
    assert received == list(range(20))
    assert [document["n"] for document in client.db.numbers.find(batch_size=10)] == list(range(100))
    assert len(finds(standin, "db", "numbers", "getMore")) == 2 + 9


def test_slow_collection_delays_each_reply(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 30)
    seed_numbers(standin, 30, collection="fast")
    client.db.numbers.find_one()  # connection set up outside the timing
    standin.slow("db", "numbers", 0.2)
    started = time.monotonic()
    assert len(list(client.db.numbers.find(batch_size=10))) == 30
    assert time.monotonic() - started >= 0.6  # find and two getMores
    started = time.monotonic()
    client.db.fast.find_one()
    assert time.monotonic() - started < 0.15
    standin.clear_faults()
    started = time.monotonic()
    client.db.numbers.find_one()
    assert time.monotonic() - started < 0.15


def test_hold_keeps_a_collections_replies_until_release(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 30)
    seed_numbers(standin, 3, collection="free")
    with ThreadPoolExecutor(1) as pool:
        for let_go in (lambda: standin.release("db", "numbers"), standin.clear_faults):
            standin.clear_commands()
            standin.hold("db", "numbers")
            read = pool.submit(lambda: [doc["n"] for doc in client.db.numbers.find(batch_size=10)])
            deadline = time.monotonic() + 30
            while not finds(standin, "db", "numbers"):  # the find reached the server, which holds its reply
                assert time.monotonic() < deadline, "the find never reached the stand-in"
                time.sleep(0.01)
            assert [doc["n"] for doc in client.db.free.find()] == [0, 1, 2]  # other collections answer meanwhile
            assert not read.done()
            let_go()
            assert read.result(timeout=30) == list(range(30))


def test_commands_seen_records_filter_and_sort(standin: MongoStandIn, client: pymongo.MongoClient) -> None:
    seed_numbers(standin, 5)
    since = datetime(2024, 1, 1)
    list(client.db.events.find({"date": {"$gte": since}}).sort("date", 1))
    client.db.numbers.find_one()
    [find] = finds(standin, "db", "events")
    assert find["filter"] == {"date": {"$gte": since}}
    assert list(find["sort"].items()) == [("date", 1)] and type(find["sort"]) is dict
    assert finds(standin, "db", "numbers") and not standin.commands_seen("other")
    assert not any("hello" in c or "isMaster" in c or "ismaster" in c for c in standin.commands_seen())
    find["filter"].clear()
    assert finds(standin, "db", "events")[0]["filter"] == {"date": {"$gte": since}}
    standin.clear_commands()
    assert standin.commands_seen() == []


def test_threads_and_another_process_read_at_the_same_time(
    standin: MongoStandIn, client: pymongo.MongoClient
) -> None:
    seed_numbers(standin, 600)
    code = (
        "import sys, pymongo\n"
        "client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)\n"
        "print(sum(doc['n'] for doc in client.db.numbers.find(batch_size=50)))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, standin.uri], stdout=subprocess.PIPE, text=True)
    totals: list[int] = []

    def read() -> None:
        with pymongo.MongoClient(standin.uri) as own:
            totals.append(sum(doc["n"] for doc in own.db.numbers.find(batch_size=25)))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    output, _ = process.communicate(timeout=60)
    assert totals == [sum(range(600))] * 6
    assert process.returncode == 0 and int(output) == sum(range(600))


def test_credentials_are_refused_like_a_server_without_that_user(standin: MongoStandIn) -> None:
    uri = standin.uri.replace("mongodb://", "mongodb://loader:Sup3rS3cret@")
    with (
        pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000) as secured,
        pytest.raises(pymongo.errors.OperationFailure) as failure,
    ):
        secured.admin.command("ping")
    assert failure.value.code == 18


def test_stop_hangs_up_and_frees_the_port() -> None:
    standin = MongoStandIn().start()
    port = standin.port
    with pymongo.MongoClient(standin.uri, serverSelectionTimeoutMS=300) as connection:
        assert connection.admin.command("ping")["ok"] == 1.0
        started = time.monotonic()
        standin.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(pymongo.errors.PyMongoError):
            connection.admin.command("ping")
    with MongoStandIn(port=port) as again:
        assert again.port == port


def test_module_entry_point_serves_sample_data_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mongodb_dlt.testing", "--scale", "0.02", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        uri = process.stdout.readline().strip()
        assert uri.startswith("mongodb://127.0.0.1:")
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as connection:
            assert connection.sample_mflix.comments.count_documents({}) == 30
            first = connection.sample_analytics.transactions.find_one({}, sort=[("date", 1)])
            assert first["date"] >= datetime(2019, 1, 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


PATCH_PROBE = """
import mongomock
from bson import Decimal128

def range_filter_on_decimals():
    collection = mongomock.MongoClient().db.amounts
    collection.insert_many([{"amount": Decimal128("2")}, {"amount": Decimal128("1")}])
    try:
        return len(list(collection.find({"amount": {"$gt": Decimal128("1")}})))
    except NotImplementedError:
        return "refused"

import mongodb_dlt.testing
print(range_filter_on_decimals())
mongodb_dlt.testing.MongoStandIn()
print(range_filter_on_decimals())
"""


def test_importing_the_testing_package_patches_nothing_until_a_standin_is_created() -> None:
    # A fresh interpreter: this one has created stand-ins already.
    done = subprocess.run([sys.executable, "-c", PATCH_PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["refused", "1"]
