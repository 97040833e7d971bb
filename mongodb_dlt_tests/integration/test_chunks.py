"""Chunked, resumable reads over the stand-in's socket: each chunk commits its rows with its progress, a read cut
short after any chunk (a failure, a stop) reads on from there at the next run and the warehouse ends exact, for
every write disposition, over ``_id``s of every type bracket, with writers changing the collection between
chunks, for empty and one-document collections; a completed snapshot leaves no progress behind."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dagster as dg
import dlt
import pymongo
import pytest
from bson import Binary, Code, MaxKey, MinKey, ObjectId, Timestamp

from mongodb_dlt.checks import read_metadata, rows_match_source
from mongodb_dlt.config import CollectionConfig, load_config
from mongodb_dlt.errors import ConfigError
from mongodb_dlt.extract import ranges
from mongodb_dlt.extract.bson_arrow import CODEC_OPTIONS, identity
from mongodb_dlt.load import progress
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.stopping import LoadStop
from mongodb_dlt.naming import pipeline_name
from mongodb_dlt.results import CollectionLoadResult
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project

DISPOSITIONS = {
    "merge": "{}",
    "append": "{write_disposition: append}",
    "append_incremental": "{write_disposition: append, incremental: {cursor_field: seq}}",
    "merge_incremental": "{incremental: {cursor_field: seq}}",
}
CHUNK, BATCH = 40, 10


def document(i: int, items: int = 2) -> dict[str, Any]:
    return {"_id": i, "seq": i, "name": f"order {i}", "items": [{"sku": f"s{i}-{k}"} for k in range(items)]}


class Loads:
    """The project's collection, loaded in this process with ``chunk_size`` CHUNK; ``after_chunk`` runs a callback
    as each chunk commits (its number in the run), to cut the read short or change the collection there."""

    def __init__(
        self, project: Project, options: str, chunk_size: int | str = CHUNK, batch_size: int = BATCH
    ) -> None:
        project.write_config(
            f"""
            defaults: {{batch_size: {batch_size}, chunk_size: {chunk_size}, retries: {{max_attempts: 1}}}}
            destination: {{destination}}
            databases:
              shop:
                collections:
                  orders: {options}
            """
        )
        config = load_config(project.config)
        self.project = project
        self.collection: CollectionConfig = config.databases["shop"].collections["orders"]
        self.loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
        self.after_chunk: Callable[[int], None] | None = None

    def run(self, count_rows: bool = False, stop: LoadStop | None = None) -> CollectionLoadResult:
        return self.loader.load_collection(self.collection, "mongo_shop", count_rows=count_rows, stop=stop)

    def snapshot(self) -> ranges.Snapshot | None:
        """The snapshot in progress that the working folder's state holds (as the warehouse's last load left it)."""
        name = pipeline_name(self.collection.database, self.collection.asset_name)
        pipeline = dlt.attach(name, pipelines_dir=str(self.loader.destination.working_dir))
        return ranges.in_progress(pipeline.state, self.collection.table_name)

    def keys(self) -> list[tuple[str, int]]:
        return sorted(self.project.query("SELECT _mongo_key, count(*) FROM mongo_shop.orders GROUP BY 1"))


@pytest.fixture
def chunk_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[int], None]]]:
    """Callbacks run as each chunk commits, with the chunk's number in its run."""
    hooks: list[Callable[[int], None]] = []
    committed = progress.ChunkLogger.committed

    def with_hooks(self: progress.ChunkLogger) -> None:
        committed(self)
        for hook in hooks:
            hook(self.chunks)

    monkeypatch.setattr(progress.ChunkLogger, "committed", with_hooks)
    yield hooks


def keys_of(ids: list[Any]) -> list[tuple[str, int]]:
    return sorted((identity(value), 1) for value in ids)


def stored_ids(standin: MongoStandIn) -> list[Any]:
    """The ``_id``s the stand-in holds, decoded as the converter decodes them."""
    with pymongo.MongoClient(standin.uri) as client:
        orders = client.shop.get_collection("orders", codec_options=CODEC_OPTIONS)
        return [found["_id"] for found in orders.find({}, {"_id": 1})]


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_each_chunk_commits_its_rows_with_its_progress_and_a_complete_read_leaves_none(
    disposition: str, project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    standin.client.shop.orders.insert_many([document(i) for i in range(95)])
    loads = Loads(project, DISPOSITIONS[disposition])
    progress: list[tuple[int, Any]] = []
    chunk_hook.append(lambda chunk: progress.append((project.scalar("SELECT count(*) FROM mongo_shop.orders"),
                                                     loads.snapshot())))
    result = loads.run()
    assert result.succeeded, result.error
    assert result.chunks == 3 and len(result.load_ids) == 3 and result.documents_read == 95
    # each chunk's rows are in the warehouse when it commits, and its progress with them
    # an incremental chunk reads on from its last cursor value, where it skips the document it loaded
    assert [rows for rows, _ in progress] == ([40, 79, 95] if "incremental" in disposition else [40, 80, 95])
    if "incremental" not in disposition:
        kept = [snapshot for _, snapshot in progress[:2]]
        assert [(s.ranges[0].last, s.documents, s.chunks) for s in kept if s] == [(39, 40, 1), (79, 80, 2)]
    assert progress[2][1] is None and loads.snapshot() is None, "a complete read leaves no progress behind"
    assert loads.keys() == keys_of(list(range(95)))

    progress.clear()
    again = loads.run()
    assert again.succeeded, again.error
    copies = 2 if disposition == "append" else 1
    if "incremental" in disposition:
        assert again.documents_read == 0
    else:  # a new snapshot, from the start
        assert again.documents_read == 95 and progress[0][0] == 95 + 40 * (copies - 1)
    assert loads.keys() == sorted((identity(i), copies) for i in range(95))


CUTS = {
    # the next chunk's query is refused: the run fails between two chunks
    "between_chunks": lambda standin: standin.fail_collection("shop", "orders", times=1),
    # the connection drops in the middle of the next chunk's read: that chunk's package is dropped
    "inside_a_chunk": lambda standin: standin.drop_connection("shop", "orders", after_batches=2),
}


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_a_read_cut_short_after_a_chunk_reads_on_from_there(
    disposition: str, cut: str, project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    standin.client.shop.orders.insert_many([document(i, i % 3) for i in range(130)])
    loads = Loads(project, DISPOSITIONS[disposition])
    chunk_hook.append(lambda chunk: CUTS[cut](standin) if chunk == 2 else None)
    cut_short = loads.run()
    assert not cut_short.succeeded and "2 chunk(s) of its read committed" in (cut_short.error or "")
    committed = 79 if "incremental" in disposition else 80  # an incremental chunk starts at its last value
    assert loads.keys() == keys_of(list(range(committed))), "the two committed chunks stay, nothing of the third"
    if "incremental" not in disposition:
        kept = loads.snapshot()
        assert kept is not None and kept.ranges[0].last == 79 and kept.chunks == 2

    chunk_hook.clear()
    resumed = loads.run()
    assert resumed.succeeded, resumed.error
    assert resumed.documents_read == 130 - committed, "the next run reads on after the last committed chunk"
    assert loads.keys() == keys_of(list(range(130)))
    children = project.scalar("SELECT count(*) FROM mongo_shop.orders__items")
    assert children == sum(i % 3 for i in range(130))
    assert loads.snapshot() is None


def mixed_ids() -> list[Any]:
    """``_id``s of every type bracket the stand-in can hold, in MongoDB's order. mongomock keys its documents by
    ``_id``, so it cannot hold sub-document or Decimal128 ``_id``s, and its ``$gte`` never matches a Timestamp:
    ``test_range_conditions_cover_every_bracket_once`` covers those brackets' conditions."""
    return [
        MinKey(), None, -3, 1.5, 2, 7, "", "a", "b", "zz", Binary(b"\x01", 0), Binary(b"\x01\x02", 0),
        Binary(uuid.UUID(int=5).bytes, 4), ObjectId("5f0000000000000000000001"), ObjectId("5f0000000000000000000002"),
        False, True, dt.datetime(2001, 1, 1, tzinfo=dt.UTC), dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        MaxKey(),
    ]


@pytest.mark.parametrize("disposition", ["merge", "append"])
def test_mixed_id_types_are_read_once_each_resumed_after_a_cut_in_every_bracket(
    disposition: str, project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    ids = mixed_ids()
    standin.client.shop.orders.insert_many([{"_id": value, "n": position} for position, value in enumerate(ids)])
    # two documents per chunk; every run fails after its first chunk, so each run starts where the last one
    # stopped: after a MinKey, a null, a number, a string, binary, an ObjectId, a bool, a date, a timestamp
    loads = Loads(project, DISPOSITIONS[disposition], chunk_size=2, batch_size=1)
    chunk_hook.append(lambda chunk: standin.fail_collection("shop", "orders", times=1) if chunk == 1 else None)
    resumed_after = []
    for _ in range(len(ids)):
        result = loads.run()
        if result.succeeded:
            break
        kept = loads.snapshot()
        assert kept is not None
        resumed_after.append(kept.ranges[0].last)
    assert result.succeeded, result.error
    standin.clear_faults()  # the last run's failure, armed after its one chunk, never fired
    assert len(resumed_after) == len(ids) // 2 - 1
    assert loads.keys() == keys_of(stored_ids(standin)), "every _id exactly once"
    assert project.scalar("SELECT count(DISTINCT n) FROM mongo_shop.orders") == len(ids)


def test_range_conditions_cover_every_bracket_once() -> None:
    """``between`` of two values selects exactly the brackets between them; sub-document and Decimal128 ``_id``s
    (which the stand-in cannot hold) get their bracket's conditions too."""
    assert ranges.between(ranges.UNBOUNDED, ranges.UNBOUNDED) is None
    assert ranges.between(MaxKey(), ranges.UNBOUNDED) == [], "nothing after MaxKey"
    assert ranges.between(Timestamp(1, 1), ranges.UNBOUNDED)[:2] == [{"$gt": Timestamp(1, 1)}, {"$gte": Code("")}]
    assert ranges.between(5, ranges.UNBOUNDED)[0] == {"$gt": 5}
    assert {"$type": "object"} in ranges.between(5, ranges.UNBOUNDED)
    assert ranges.between({"a": 1}, {"b": 2}) == [{"$gt": {"a": 1}, "$lte": {"b": 2}}]
    assert ranges.between(None, 3) == [{"$lte": 3}], "after null come the numbers"
    assert ranges.between(MinKey(), None) == [{"$eq": None}]
    assert ranges.between(ranges.UNBOUNDED, MinKey()) == [{"$eq": MinKey()}]
    assert ranges.between(float("nan"), 1) == [{"$gte": float("-inf"), "$lte": 1}]
    whole = ranges.between(MinKey(), MaxKey())
    assert len(whole) == len(ranges.ID_BRACKETS) - 1  # every bracket after MinKey's, MaxKey's included


@pytest.mark.parametrize("disposition", ["merge", "append"])
def test_writers_between_chunks_leave_every_document_that_existed_throughout_exactly_once(
    disposition: str, project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    orders = standin.client.shop.orders
    orders.insert_many([document(i) for i in range(0, 200, 2)])  # even _ids 0..198
    loads = Loads(project, DISPOSITIONS[disposition])

    def write(chunk: int) -> None:
        if chunk not in (1, 2):
            return
        base = 1000 * chunk
        orders.insert_many([document(i) for i in (base + 1, base + 3)])  # ahead of the read: read once
        orders.insert_many([document(i) for i in (2 * chunk + 1, 2 * chunk + 5)])  # behind it: not read
        orders.update_one({"_id": 2 * chunk}, {"$set": {"name": "changed behind"}})
        orders.update_one({"_id": 190 + 2 * chunk}, {"$set": {"name": "changed ahead"}})
        orders.delete_one({"_id": 10 + 2 * chunk})  # read already
        orders.delete_one({"_id": 180 + 2 * chunk})  # not read yet

    chunk_hook.append(write)
    result = loads.run()
    assert result.succeeded, result.error
    throughout = [i for i in range(0, 200, 2) if i not in (182, 184)]
    counted = dict(loads.keys())
    assert all(counted.get(identity(i)) == 1 for i in throughout), "existed for the whole read: exactly once"
    assert counted.get(identity(1001)) == counted.get(identity(2003)) == 1, "inserted ahead of the read: once"
    assert max(counted.values()) == 1, "nothing twice"
    assert set(counted) == {identity(i) for i in [*throughout, 12, 14, 1001, 1003, 2001, 2003]}, (
        "deleted after it was read: kept; deleted before: not loaded; inserted behind the read: not loaded"
    )
    names = dict(project.query("SELECT _mongo_key, name FROM mongo_shop.orders"))
    assert names[identity(192)] == names[identity(194)] == "changed ahead"
    assert names[identity(2)] == "order 2", "changed behind the read: the next snapshot loads the change"


@pytest.mark.parametrize("disposition", ["merge", "append", "append_incremental"])
@pytest.mark.parametrize("documents", [0, 1])
def test_empty_and_one_document_collections(
    disposition: str, documents: int, project: Project, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([document(i) for i in range(documents)]) if documents else None
    standin.client.shop.create_collection("orders") if not documents else None
    loads = Loads(project, DISPOSITIONS[disposition])
    for run in (1, 2):
        result = loads.run(count_rows=True)
        assert result.succeeded, result.error
        assert result.chunks == 1 and loads.snapshot() is None
        copies = run if disposition == "append" else 1
        if documents:
            assert loads.keys() == [(identity(0), copies)]
        else:
            assert result.documents_read == 0


def test_a_stop_between_chunks_keeps_them_and_the_next_run_reads_on(
    project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    """The loader commits the chunks before the last on its own (the caller waits for the whole load inside
    ``commits_allowed``, as the factory does); a stop after the second ends the load there, not reported."""
    standin.client.shop.orders.insert_many([document(i) for i in range(130)])
    loads = Loads(project, DISPOSITIONS["append"])
    stop = LoadStop()
    chunk_hook.append(lambda chunk: stop.requested.set() if chunk == 2 else None)
    stopped = caller_waits(loads, stop)
    assert not stopped.succeeded and "the 2 chunk(s) committed stay" in (stopped.error or "")
    assert loads.keys() == keys_of(list(range(80)))

    chunk_hook.clear()
    finished = caller_waits(loads, LoadStop())
    assert finished.succeeded and finished.documents_read == 50
    assert loads.keys() == keys_of(list(range(130)))


def caller_waits(loads: Loads, stop: LoadStop) -> CollectionLoadResult:
    """Loads as the factory does: the caller waits for the result inside ``commits_allowed``."""
    with ThreadPoolExecutor(1) as pool:
        future: Future[CollectionLoadResult] = pool.submit(loads.run, False, stop)
        done = threading.Event()
        future.add_done_callback(lambda _: (stop.release(loads.collection.name), done.set()))
        while not done.is_set():
            with stop.commits_allowed():
                done.wait()
        return future.result()


def test_rows_match_source_spans_a_resumed_snapshot(
    project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    """The source counts of a snapshot read over two runs are taken at its start and at its end: documents inserted
    between the runs are counted after, and the check holds."""
    orders = standin.client.shop.orders
    orders.insert_many([document(i) for i in range(100)])
    loads = Loads(project, DISPOSITIONS["merge"])
    chunk_hook.append(lambda chunk: standin.fail_collection("shop", "orders", times=1) if chunk == 1 else None)
    assert not loads.run(count_rows=True).succeeded
    chunk_hook.clear()
    orders.insert_many([document(i) for i in range(100, 110)])
    result = loads.run(count_rows=True)
    assert result.succeeded, result.error
    counts = result.row_counts
    assert counts is not None
    assert (counts.source_before, counts.source_after, counts.warehouse_rows) == (100, 110, 110)
    check = rows_match_source(dg.AssetKey(["raw_shop", "orders"]), loads.collection, result)
    assert check.passed, check.description
    assert "finished a snapshot an earlier run started" in str(check.metadata["explanation"].value)
    metadata = read_metadata(result)
    assert metadata["snapshot_resumed"].value is True and metadata["snapshot_documents"].value == 110
    assert metadata["chunks"].value == 2 and metadata["snapshot_chunks"].value == 3
    assert metadata["snapshot_ranges"].value == ["(start, end]: done, 110 documents"]


def test_a_snapshot_in_progress_is_dropped_by_a_read_in_one_package(
    project: Project, standin: MongoStandIn, chunk_hook: list[Callable[[int], None]]
) -> None:
    """``chunk_size`` set to null (or ``replace``) while a snapshot is in progress: that run reads everything in one
    package and drops the progress, so a later chunked run starts a snapshot of its own."""
    standin.client.shop.orders.insert_many([document(i) for i in range(100)])
    chunk_hook.append(lambda chunk: standin.fail_collection("shop", "orders", times=1) if chunk == 1 else None)
    assert not Loads(project, "{}").run().succeeded
    chunk_hook.clear()
    whole = Loads(project, "{}", chunk_size="null")
    assert whole.snapshot() is not None
    result = whole.run()
    assert result.succeeded and result.documents_read == 100 and result.chunks == 0
    assert whole.snapshot() is None
    assert Loads(project, "{}").run().documents_read == 100


@pytest.mark.parametrize(
    ("value", "documents", "size"),
    [("250000", 250_000, None), ("512MB", None, 512_000_000), ("1 GiB", None, 2**30), ("null", None, None)],
)
def test_chunk_size_is_documents_or_a_size(
    project: Project, value: str, documents: int | None, size: int | None
) -> None:
    chunks = Loads(project, "{}", chunk_size=value).collection
    assert (chunks.chunk_documents, chunks.chunk_bytes, chunks.chunked) == (documents, size, value != "null")


@pytest.mark.parametrize("value", ["0", "-5", "lots", "0MB", "2.5", "true"])
def test_a_chunk_size_that_is_neither_is_refused_where_it_is(project: Project, value: str) -> None:
    refused = r"line 2, key defaults\.chunk_size: .*(expected a number of documents|no size)"
    with pytest.raises(ConfigError, match=refused):
        Loads(project, "{}", chunk_size=value)
