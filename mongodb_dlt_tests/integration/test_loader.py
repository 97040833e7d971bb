"""The loader resource's own decisions: destinations, transient-error detection, error text without secrets,
and BigQuery up to the network boundary (extract and normalize run; nothing is sent)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import bson
import dlt
import duckdb
import mongomock
import pymongo.errors
import pytest
from bson import Decimal128, ObjectId

from mongodb_dlt.config import CollectionConfig, CollectionOptions, DestinationConfig, load_config
from mongodb_dlt.errors import describe_error, is_transient
from mongodb_dlt.extract.bson_arrow import locate_conversion_error
from mongodb_dlt.extract.source import conversion_settings, mongodb_collection
from mongodb_dlt.load.destination import LoadDestination
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.progress import ProgressLogger
from mongodb_dlt.load.warehouse import count_rows
from mongodb_dlt.results import RowCounts
from mongodb_dlt.testing import MongoStandIn, commands


def test_transient_errors_are_found_through_dlt_wrapping() -> None:
    try:
        try:
            raise pymongo.errors.AutoReconnect("connection closed")
        except pymongo.errors.AutoReconnect as inner:
            raise RuntimeError("extraction failed") from inner
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert is_transient(pymongo.errors.CursorNotFound("cursor id 7 not found", code=43))
    assert is_transient(pymongo.errors.NetworkTimeout("timed out"))
    assert not is_transient(pymongo.errors.OperationFailure("not authorized", code=13))
    assert not is_transient(ValueError("bad"))


def test_error_descriptions_mask_passwords() -> None:
    error = pymongo.errors.ServerSelectionTimeoutError("mongodb://app:hunter2@db.internal:27017 timed out")
    text = describe_error(error)
    assert "hunter2" not in text
    assert "ServerSelectionTimeoutError" in text and "db.internal:27017" in text


def test_duckdb_destination_uses_the_configured_file(tmp_path: Path) -> None:
    loader = MongoDltLoader.from_config(DestinationConfig(type="duckdb", path=str(tmp_path / "w.duckdb")))
    assert loader.destination.dlt_destination().destination_name == "duckdb"
    assert loader.destination.destination_id == f"duckdb:{tmp_path / 'w.duckdb'}"
    with loader.destination.session(logging.getLogger(__name__)) as destination:
        pipeline = dlt.pipeline("settings", pipelines_dir=str(tmp_path / "p"), destination=destination)
        with pipeline.sql_client() as client:
            # loads hold DuckDB to the configured memory (the YAML default), so a step's memory stays flat
            limit = client.execute_sql("SELECT current_setting('memory_limit')")[0][0]
        assert limit.replace(" ", "") in {"61.0MiB", "64.0MB", "61MiB"}, limit


def test_relative_paths_resolve_against_the_base_folder_once(tmp_path: Path) -> None:
    loader = MongoDltLoader.from_config(DestinationConfig(type="duckdb", path="data/w.duckdb"), base=tmp_path)
    assert loader.destination.path == str(tmp_path / "data" / "w.duckdb")
    assert loader.destination.pipelines_dir == str(tmp_path / ".mongodb_dlt" / "pipelines")
    other = MongoDltLoader.from_config(DestinationConfig(type="duckdb", path="data/w.duckdb"), base=tmp_path / "b")
    # each warehouse gets its own working folder, even when the pipelines folder is shared
    assert Path(loader.destination.working_dir).parent == Path(loader.destination.pipelines_dir)
    assert loader.destination.working_dir.name != other.destination.working_dir.name


def test_bigquery_is_configured_from_yaml_and_normalizes_offline(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "destination: {type: bigquery, project: acme-analytics, location: EU}\n"
        "databases:\n  shop: [orders]\n"
    )
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))
    destination = loader.destination.dlt_destination()
    assert destination.destination_name == "bigquery"
    assert destination.config_params["location"] == "EU"
    assert destination.config_params["project_id"] == "acme-analytics"

    client = mongomock.MongoClient()
    client.shop.orders.insert_many(
        [{"_id": ObjectId(), "n": i, "total": Decimal128("1.50"), "lines": [{"sku": "a"}]} for i in range(20)]
    )
    collection = config.databases["shop"].collections["orders"]
    pipeline = dlt.pipeline("bigquery_offline", pipelines_dir=str(tmp_path / "pipelines"),
                            destination=destination, dataset_name=config.databases["shop"].dataset)
    assert pipeline.dataset_name == "mongo_shop"
    pipeline.extract(
        mongodb_collection(None, "shop", "orders", client=client, table_name=collection.table_name),
        loader_file_format=loader.destination.file_format,
    )
    info = pipeline.normalize()
    assert info.row_counts["orders"] == 20 and info.row_counts["orders__lines"] == 20
    jobs = pipeline.list_normalized_load_packages()
    assert jobs, "a package is ready for BigQuery"
    files = [job.file_path for job in pipeline.get_load_package_info(jobs[0]).jobs["new_jobs"]]
    assert loader.destination.file_format == "jsonl"  # dlt's BigQuery loads JSON columns from jsonl only
    assert any(name.endswith(".jsonl") or name.endswith(".jsonl.gz") for name in files)


def test_destination_unknown_to_dlt_is_rejected_before_any_run(tmp_path: Path) -> None:
    # past the YAML's validation (which names the known destinations), dlt itself refuses it
    unknown = DestinationConfig.model_construct(type="no_such_warehouse", options={}, project=None, location=None)
    loader = MongoDltLoader(LoadDestination(unknown, path=None, pipelines_dir=str(tmp_path)))
    with pytest.raises(Exception, match="no_such_warehouse"):
        loader.destination.dlt_destination()


@pytest.fixture(autouse=True)
def _uri_of_the_standin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that use the stand-in load from it through ${MONGODB_URI}, as users do."""
    if "standin" in request.fixturenames:
        monkeypatch.setenv("MONGODB_URI", request.getfixturevalue("standin").uri)


def _collection_config(tmp_path: Path, options: str) -> tuple[MongoDltLoader, CollectionConfig]:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  retries: {max_attempts: 3, backoff_seconds: 0.01}\n  batch_size: 10\n"
        f"destination: {{type: duckdb, path: {tmp_path / 'w.duckdb'}}}\n"
        f"databases:\n  shop:\n    collections:\n      orders: {options}\n"
    )
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))
    return loader, config.databases["shop"].collections["orders"]


def test_a_bad_filter_fails_at_once_with_the_servers_message(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([{"n": i} for i in range(5)])
    loader, orders = _collection_config(tmp_path, "{filter: {n: {$bogus: 1}}}")
    result = loader.load_collection(orders, "mongo_shop")
    assert not result.succeeded
    assert result.attempts == 1
    assert "OperationFailure" in (result.error or "") and "$bogus" in (result.error or "")


def test_transient_errors_are_retried_until_attempts_run_out(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([{"n": i} for i in range(50)])
    standin.drop_connection("shop", "orders", after_batches=1, times=None)
    loader, orders = _collection_config(tmp_path, "{}")
    result = loader.load_collection(orders, "mongo_shop")
    assert not result.succeeded and result.attempts == 3
    assert "AutoReconnect" in (result.error or "")

    standin.clear_faults()
    result = loader.load_collection(orders, "mongo_shop")
    assert result.succeeded and result.rows_loaded == 50 and result.attempts == 1


def test_progress_is_logged_while_a_collection_loads(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("mongodb_dlt.load.progress.PROGRESS_LOG_EVERY_SECONDS", 0.0)
    standin.client.shop.orders.insert_many([{"n": i} for i in range(30)])
    loader, orders = _collection_config(tmp_path, "{}")
    with caplog.at_level(logging.INFO, logger="mongodb_dlt.load.loader"):
        assert loader.load_collection(orders, "mongo_shop").succeeded
    progress = [r.getMessage() for r in caplog.records if "documents read" in r.getMessage()]
    # one line per batch of documents converted (batch_size 10 here), never a line per document, and none for the
    # first batch: its wait is the server's planning, not the read's speed
    assert [line.split(" (")[0] for line in progress] == [f"shop.orders: {n} documents read" for n in (20, 30)]
    assert all(re.fullmatch(r"shop\.orders: \d+ documents read \([\d,]+/s\)", line) for line in progress), progress


def test_the_progress_rate_counts_from_the_first_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # a first batch of 1,000 documents after a long wait, then 1,000 documents/s: the wait never dilutes the rate,
    # and no line comes before there is a rate to show
    clock = iter([160.0, 161.0, 172.0])
    monkeypatch.setattr("mongodb_dlt.load.progress.time.monotonic", lambda: next(clock))
    lines: list[str] = []
    log = logging.getLogger("progress")
    monkeypatch.setattr(log, "info", lines.append)
    progress = ProgressLogger("shop.orders", log)
    for documents in (1_000, 2_000, 13_000):
        progress(documents)
    assert lines == ["shop.orders: 13,000 documents read (1,000/s)"]


def test_any_dlt_destination_by_name_loads_through_the_same_loader(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([{"n": i, "lines": [{"sku": "a"}, {"sku": "b"}]} for i in range(12)])
    path = tmp_path / "databases.yaml"
    path.write_text(
        f"destination: {{type: filesystem, options: {{bucket_url: 'file://{tmp_path / 'lake'}'}}}}\n"
        "databases:\n  shop: [orders]\n"
    )
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(tmp_path / "pipelines"))
    result = loader.load_collection(config.databases["shop"].collections["orders"], "mongo_shop", count_rows=True)
    assert result.succeeded, result.error
    assert result.rows_loaded == 12 and result.child_tables == {"orders__lines": 24}
    assert list((tmp_path / "lake" / "mongo_shop" / "orders").glob("*.parquet"))
    # dlt queries files through DuckDB, so rows_match_source is verified on a filesystem destination too
    assert result.row_counts == RowCounts(source_before=12, source_after=12, warehouse_rows=12, rows_added=12)
    # and it loads again: the undo of unfinished loads, which needs SQL, is skipped for files
    again = loader.load_collection(config.databases["shop"].collections["orders"], "mongo_shop")
    assert again.succeeded, again.error


def test_a_destination_without_sql_is_counted_as_not_verifiable(tmp_path: Path) -> None:
    pipeline = dlt.pipeline("no_sql", pipelines_dir=str(tmp_path), destination="dummy", dataset_name="mongo_shop")
    counts = count_rows(pipeline, "orders", ["1712345678.123"], whole_table=True)
    assert counts == RowCounts(not_verifiable="destination dummy cannot be queried with SQL")


def test_a_frozen_column_contract_fails_the_collection_on_a_new_field(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([{"n": i} for i in range(5)])
    loader, orders = _collection_config(tmp_path, "{schema_contract: {columns: freeze, data_type: freeze}}")
    first = loader.load_collection(orders, "mongo_shop")
    assert first.succeeded and first.rows_loaded == 5, first.error

    standin.client.shop.orders.insert_one({"n": 5, "coupon": "SPRING"})
    second = loader.load_collection(orders, "mongo_shop")
    assert not second.succeeded and second.attempts == 1
    assert "coupon" in (second.error or "") and "freeze" in (second.error or "")


def test_freezing_everything_refuses_even_the_first_table(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_one({"n": 1})
    loader, orders = _collection_config(tmp_path, "{schema_contract: freeze}")
    result = loader.load_collection(orders, "mongo_shop")
    assert not result.succeeded
    assert "Can't add table `orders` because `tables` are frozen" in (result.error or "")


def test_an_incremental_collection_moved_to_a_new_dataset_loads_in_full_there(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    standin.client.shop.orders.insert_many([{"n": i} for i in range(20)])
    loader, orders = _collection_config(tmp_path, "{incremental: {cursor_field: n}, write_disposition: append}")
    assert loader.load_collection(orders, "sales_v1").rows_loaded == 20
    assert loader.load_collection(orders, "sales_v1").rows_loaded == 0
    moved = loader.load_collection(orders, "sales_v2")
    assert moved.succeeded and moved.rows_loaded == 20 and moved.cursor_before is None


@pytest.mark.parametrize("failing_step", ["normalize", "load"])
def test_a_failed_package_is_never_replayed_and_the_next_run_loads_exactly_once(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    standin.client.shop.orders.insert_many([{"n": i, "lines": [i, i]} for i in range(30)])
    loader, orders = _collection_config(tmp_path, "{incremental: {cursor_field: n}, write_disposition: append}")
    original = getattr(dlt.Pipeline, failing_step)
    calls = {"n": 0}

    def fails_once(self: dlt.Pipeline, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(f"{failing_step} broke")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dlt.Pipeline, failing_step, fails_once)
    failed = loader.load_collection(orders, "mongo_shop")
    assert not failed.succeeded and f"{failing_step} broke" in (failed.error or "")

    standin.client.shop.orders.insert_many([{"n": i, "lines": [i]} for i in range(30, 40)])
    second = loader.load_collection(orders, "mongo_shop")
    assert second.succeeded and second.rows_loaded == 40, second.error
    assert second.cursor_before is None and second.cursor_after == 39
    third = loader.load_collection(orders, "mongo_shop")
    assert third.succeeded and third.rows_loaded == 0
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as warehouse:
        assert warehouse.execute("select count(*), count(distinct n) from mongo_shop.orders").fetchall() == [(40, 40)]
        assert warehouse.execute("select count(*) from mongo_shop.orders__lines").fetchall() == [(70,)]


def test_a_document_that_cannot_be_converted_is_named_by_id_and_field() -> None:
    good = bson.encode({"_id": 1, "name": "ok"})
    bad = bson.encode({"_id": ObjectId("65f1a2b3c4d5e6f708192a3b"), "name": "ok", "note": "x"})
    bad = bad.replace(b"x\x00", b"\xff\x00")  # the string "x" becomes invalid UTF-8
    settings = conversion_settings(CollectionOptions())
    error = locate_conversion_error(good + bad, settings, None, "shop.orders", ValueError("batch failed"))
    assert str(error).startswith('shop.orders: document _id={"$oid": "65f1a2b3c4d5e6f708192a3b"}, field \'note\': ')
    assert "utf-8" in str(error).lower()


def test_merge_staging_is_emptied_after_each_load(tmp_path: Path, standin: MongoStandIn) -> None:
    standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"sku": "a"}]} for i in range(8)])
    loader, orders = _collection_config(tmp_path, "{}")
    assert loader.load_collection(orders, "mongo_shop").succeeded  # the first load appends, without staging
    standin.client.shop.orders.update_one({"_id": 3}, {"$set": {"lines": [{"sku": "b"}, {"sku": "c"}]}})
    assert loader.load_collection(orders, "mongo_shop").succeeded  # merges through mongo_shop_staging
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from mongo_shop.orders").fetchone() == (8,)
        assert connection.execute("select count(*) from mongo_shop.orders__lines").fetchone() == (9,)
        for table in ("orders", "orders__lines"):
            assert connection.execute(f"select count(*) from mongo_shop_staging.{table}").fetchone() == (0,)


def _staging_tables(tmp_path: Path) -> set[str]:
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        rows = connection.execute(
            "select table_name from information_schema.tables where table_schema = 'mongo_shop_staging'"
        ).fetchall()
    return {row[0] for row in rows}


def test_a_merge_collections_first_load_appends_and_later_loads_merge_into_it(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    """Into a warehouse holding none of its tables, a merge collection's first load appends (no staging copy, no
    merge statements); the loads after it merge: arrays that grow, shrink and empty, and documents that go."""
    orders = standin.client.shop.orders
    orders.insert_many([{"_id": i, "lines": [{"sku": f"a{i}"}] * (i % 3)} for i in range(6)])
    loader, collection = _collection_config(tmp_path, "{}")
    assert loader.load_collection(collection, "mongo_shop").succeeded
    assert not _staging_tables(tmp_path)

    orders.update_one({"_id": 1}, {"$set": {"lines": []}})
    orders.update_one({"_id": 2}, {"$set": {"lines": [{"sku": "b"}] * 4}})
    orders.update_one({"_id": 0}, {"$set": {"lines": [{"sku": "c"}]}})
    assert loader.load_collection(collection, "mongo_shop").succeeded
    assert {"orders", "orders__lines"} <= _staging_tables(tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        lines = connection.execute(
            "select r._id, count(c._dlt_id) from mongo_shop.orders r left join mongo_shop.orders__lines c"
            " on c._dlt_root_id = r._dlt_id group by r._id order by r._id"
        ).fetchall()
        assert lines == [(0, 1), (1, 0), (2, 4), (3, 0), (4, 1), (5, 2)]
        assert connection.execute("select count(*) from mongo_shop.orders__lines").fetchone() == (8,)


def test_negative_zero_stays_negative_through_a_first_load_and_a_merge(tmp_path: Path, standin: MongoStandIn) -> None:
    """The root table keeps -0.0 when the merge has nothing to de-duplicate (DuckDB's window would make it 0.0)."""
    standin.client.shop.orders.insert_many([{"_id": 1, "f": -0.0, "l": [-0.0]}, {"_id": 2, "f": 1.5}])
    loader, collection = _collection_config(tmp_path, "{}")
    for _ in range(2):  # the first load appends, the second merges
        assert loader.load_collection(collection, "mongo_shop").succeeded
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
            minus = (float("-inf"),)
            assert connection.execute("select 1 / f from mongo_shop.orders where _id = 1").fetchone() == minus
            assert connection.execute("select 1 / value from mongo_shop.orders__l").fetchone() == minus

def test_a_first_load_whose_documents_repeat_a_key_merges(tmp_path: Path, standin: MongoStandIn) -> None:
    """Two documents with one primary key in a first load: appending would keep both, so it merges."""
    standin.client.shop.orders.insert_many(
        [{"_id": i, "sku": f"s{i % 3}", "lines": [{"n": i}]} for i in range(4)]  # s0 twice
    )
    loader, collection = _collection_config(tmp_path, "{primary_key: sku}")
    assert loader.load_collection(collection, "mongo_shop").succeeded
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*), count(distinct sku) from mongo_shop.orders").fetchone() == (3, 3)
        orphans = connection.execute(
            "select count(*) from mongo_shop.orders__lines c where not exists"
            " (select 1 from mongo_shop.orders r where r._dlt_id = c._dlt_root_id)"
        ).fetchone()
        assert orphans == (0,)
        assert connection.execute("select count(*) from mongo_shop.orders__lines").fetchone() == (3,)


def test_a_table_of_the_collections_name_already_in_the_warehouse_means_no_first_load(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    """A table named like one of the collection's, put there by anything else, makes the load merge: appending is
    only for a warehouse holding none of them."""
    standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"n": i}]} for i in range(3)])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        connection.execute("create schema mongo_shop; create table mongo_shop.orders__old (x int)")
    loader, collection = _collection_config(tmp_path, "{}")
    assert loader.load_collection(collection, "mongo_shop").succeeded
    assert {"orders", "orders__lines"} <= _staging_tables(tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from mongo_shop.orders").fetchone() == (3,)

def test_a_document_met_twice_by_one_read_keeps_its_newest_version_only(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental read sorted by its cursor meets a document again when the document's cursor moves ahead of
    the scan while the read runs (MongoDB's cursors are not snapshots). The warehouse keeps its newest version and
    that version's array elements only."""
    orders = standin.client.shop.orders
    orders.insert_many([{"_id": i, "seq": i, "items": [{"v": "first"}]} for i in range(5)])
    loader, collection = _collection_config(tmp_path, "{incremental: {cursor_field: seq}}")
    assert loader.load_collection(collection, "mongo_shop").succeeded

    orders.insert_many([{"_id": i, "seq": i, "items": [{"v": "first"}]} for i in range(5, 10)])
    older = {"_id": 7, "seq": 7, "items": [{"v": "old"}, {"v": "old"}]}
    orders.replace_one({"_id": 7}, {"_id": 7, "seq": 20, "items": [{"v": "new"}, {"v": "new"}, {"v": "new"}]})
    materialize = commands._materialize

    def met_twice(cursor: Any) -> list[dict[str, Any]]:
        documents = materialize(cursor)
        # the scan passed seq 7 before the update moved the document to seq 20: the older version comes first
        return [older, *documents] if any(d.get("_id") == 7 for d in documents) else documents

    monkeypatch.setattr(commands, "_materialize", met_twice)
    second = loader.load_collection(collection, "mongo_shop")
    assert second.succeeded, second.error
    assert second.rows_loaded == 6  # document 7 twice, documents 5, 6, 8, 9 once (4 is the boundary)

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select _id, seq from mongo_shop.orders where _id = 7").fetchall() == [(7, 20)]
        assert connection.execute("select count(*) from mongo_shop.orders").fetchone() == (10,)
        items = connection.execute(
            "select v, count(*) from mongo_shop.orders__items where _mongo_root_key = 'n:7' group by v"
        ).fetchall()
        assert items == [("new", 3)]
        orphans = connection.execute(
            "select count(*) from mongo_shop.orders__items c where not exists "
            "(select 1 from mongo_shop.orders r where r._dlt_id = c._dlt_root_id)"
        ).fetchone()
        assert orphans == (0,)


def _stored_deduplicated_hint(tmp_path: Path) -> Any:
    """The ``x-stage-data-deduplicated`` hint of the root table in the schema the newest load was made with."""
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        stored = connection.execute(
            "select v.schema from mongo_shop._dlt_loads l join mongo_shop._dlt_version v"
            " on v.version_hash = l.schema_version_hash order by l.load_id desc limit 1"
        ).fetchone()
    assert stored is not None
    return json.loads(stored[0])["tables"]["orders"].get("x-stage-data-deduplicated")


def test_a_merge_skips_deduplication_only_for_a_package_whose_keys_are_all_distinct(
    tmp_path: Path, standin: MongoStandIn
) -> None:
    """dlt's merge numbers every staging row per key unless told the rows are distinct. Each package is checked
    from its own rows: distinct keys are declared so; keys that repeat (here a user key two documents share) are
    deduplicated, although the schema stored by the run before said otherwise."""
    orders = standin.client.shop.orders
    orders.insert_many([{"_id": i, "sku": f"s{i}", "seq": i, "items": [{"v": i}]} for i in range(6)])
    loader, collection = _collection_config(tmp_path, "{primary_key: sku}")
    assert loader.load_collection(collection, "mongo_shop").succeeded
    assert _stored_deduplicated_hint(tmp_path) is True

    orders.insert_one({"_id": 6, "sku": "s2", "seq": 60, "items": [{"v": 60}]})
    second = loader.load_collection(collection, "mongo_shop")
    assert second.succeeded, second.error
    assert _stored_deduplicated_hint(tmp_path) is False
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*), count(distinct sku) from mongo_shop.orders").fetchone() == (6, 6)
        # one of the two documents, and its own array elements only
        kept = connection.execute("select _dlt_id, _id from mongo_shop.orders where sku = 's2'").fetchall()
        assert len(kept) == 1
        items = connection.execute(
            "select v from mongo_shop.orders__items c join mongo_shop.orders r on r._dlt_id = c._dlt_root_id "
            "where r.sku = 's2'"
        ).fetchall()
        assert items == [(kept[0][1] * 10 if kept[0][1] == 6 else 2,)]
        assert connection.execute("select count(*) from mongo_shop.orders__items").fetchone() == (6,)

    orders.delete_one({"_id": 6})
    assert loader.load_collection(collection, "mongo_shop").succeeded
    assert _stored_deduplicated_hint(tmp_path) is True


def test_dlt_logs_no_warning_we_cause_on_purpose(tmp_path: Path, standin: MongoStandIn) -> None:
    """The dedup hint set between extract and normalize and our column hints over Arrow types each make dlt warn once
    per load or batch, burying every other line: the loader drops exactly those (its own schemas only)."""
    standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"sku": "a"}], "v": i} for i in range(30)])
    loader, orders = _collection_config(tmp_path, "{}")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("dlt").addHandler(handler)
    try:
        for _ in range(2):  # the first load appends; the second merges through staging
            assert loader.load_collection(orders, "mongo_shop").succeeded
    finally:
        logging.getLogger("dlt").removeHandler(handler)
    assert not [record.getMessage() for record in records], [record.getMessage() for record in records]


@pytest.mark.parametrize(
    ("options", "comment"), [("{comment: mongodb-dlt nightly}", "mongodb-dlt nightly"), ("{}", None)]
)
def test_the_reads_and_counts_carry_the_configured_comment(
    tmp_path: Path, standin: MongoStandIn, options: str, comment: str | None
) -> None:
    standin.client.shop.orders.insert_many([{"_id": i} for i in range(25)])
    loader, orders = _collection_config(tmp_path, options)
    standin.clear_commands()
    result = loader.load_collection(orders, "mongo_shop", count_rows=True)
    assert result.succeeded and result.rows_loaded == 25
    reads = [c for c in standin.commands_seen("shop", "orders") if "find" in c or "aggregate" in c]
    # the find and the two counts (count_documents runs an aggregate) before and after it
    assert sorted(next(iter(c)) for c in reads) == ["aggregate", "aggregate", "find"]
    assert [c.get("comment") for c in reads] == [comment] * 3
