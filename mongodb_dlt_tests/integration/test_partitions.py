"""Partitioned collections materialized in-process through the stand-in (DuckDB): each partition lands its window's
documents once, child rows included; a re-run changes nothing; a document whose partition field moved is in one
place once both windows ran again; an emptied window or array leaves nothing behind; documents in no window are
counted, never loaded silently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from bson import ObjectId

from mongodb_dlt.checks import DOCUMENTS_IN_WINDOWS
from mongodb_dlt.config import ProjectConfig, load_config
from mongodb_dlt.factory import LOADER_RESOURCE_KEY, dlt_asset_factory
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project

CONFIG = """
defaults:
  connection_url: ${MONGODB_URI}
  retries: {max_attempts: 1}
  batch_size: 7
destination: {destination}
databases:
  shop:
    collections:
      events:
        partitions: {by: created_at, every: day, start: "2024-01-01"}
      logs:
        partitions: {by: _id, every: day, start: "2024-01-01"}
      plain: {}
"""
OP = "mongodb_shop__day_20240101"  # the multi-asset of shop's daily partitions from 2024-01-01
DAY = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = ("2024-01-01", "2024-01-02", "2024-01-03")
OUTSIDE = [  # before the first window, no field, null, a string (another type bracket than dates)
    {"_id": "early", "created_at": DAY - timedelta(seconds=1), "items": [1]},
    {"_id": "missing", "items": [1]},
    {"_id": "null", "created_at": None},
    {"_id": "text", "created_at": "2024-01-02T00:00:00Z"},
]


def events(day: int, count: int) -> list[dict[str, Any]]:
    """``count`` documents on day ``day`` (0: the first window), each with ``count`` array elements; the last one
    sits one microsecond before the window's end."""
    start = DAY + timedelta(days=day)
    times = [start + timedelta(hours=i) for i in range(count - 1)] + [start + timedelta(days=1, microseconds=-1000)]
    return [{"_id": f"d{day}-{i}", "created_at": t, "items": list(range(count)), "n": i} for i, t in enumerate(times)]


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home")), set_dagster_home=False) as it:
        yield it


@pytest.fixture
def config(project: Project, standin: MongoStandIn) -> ProjectConfig:
    for day, count in enumerate((3, 5, 4)):
        standin.client.shop.events.insert_many(events(day, count))
    standin.client.shop.events.insert_many(OUTSIDE)
    standin.client.shop.events.insert_one({"_id": "future", "created_at": DAY + timedelta(days=3)})
    return load_config(project.write_config(CONFIG))


def materialize(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, collection: str, partition: str
) -> dg.ExecuteInProcessResult:
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    assets = [a for a in dlt_asset_factory(config) if a.partitions_def is not None]
    result = dg.materialize(
        assets,
        selection=[dg.AssetKey(["raw_shop", collection])],
        partition_key=partition,
        resources={LOADER_RESOURCE_KEY: loader},
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
    return result


def rows(project: Project, table: str, columns: str) -> Counter[tuple[Any, ...]]:
    return Counter(project.query(f"select {columns} from mongo_shop.{table}"))


def landed(project: Project) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    """The root rows (key, partition, n) and the child rows (document key, partition, element)."""
    root = rows(project, "events", "_mongo_key, _mongo_partition, n")
    children = rows(project, "events__items", "_mongo_root_key, _mongo_partition, value")
    return root, children


def expected(documents: dict[str, list[dict[str, Any]]]) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    root, children = Counter(), Counter()
    for partition, docs in documents.items():
        for doc in docs:
            root[(f"s:{doc['_id']}", partition, doc["n"])] += 1
            for value in doc.get("items", []):
                children[(f"s:{doc['_id']}", partition, value)] += 1
    return root, children


def test_each_partition_replaces_exactly_its_window(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, standin: MongoStandIn
) -> None:
    for partition in DAYS:
        result = materialize(project, config, instance, "events", partition)
    counts = zip(DAYS, (3, 5, 4), strict=True)
    windows = {partition: events(day, count) for day, (partition, count) in enumerate(counts)}
    assert landed(project) == expected(windows)

    # documents in no window are counted on every partition's materialization and fail the (WARN) check
    materialization = result.asset_materializations_for_node(OP)[0]
    assert materialization.metadata["documents_outside_windows"].value == len(OUTSIDE)
    assert materialization.metadata["partition"].value == DAYS[-1]
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == DOCUMENTS_IN_WINDOWS)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["documents_outside_windows"].value == len(OUTSIDE)

    # a re-run of a partition changes nothing
    before = project.query("select * exclude (_dlt_id, _dlt_load_id) from mongo_shop.events order by _mongo_key")
    materialize(project, config, instance, "events", DAYS[1])
    assert landed(project) == expected(windows)
    after = project.query("select * exclude (_dlt_id, _dlt_load_id) from mongo_shop.events order by _mongo_key")
    assert after == before

    # d0-0 moves to day 2; d2-0 loses its array; every document of day 3 but one goes
    events_collection = standin.client.shop.events
    events_collection.update_one({"_id": "d0-0"}, {"$set": {"created_at": DAY + timedelta(days=1, hours=23)}})
    events_collection.update_one({"_id": "d1-0"}, {"$set": {"items": []}})
    events_collection.delete_many({"_id": {"$in": ["d2-1", "d2-2", "d2-3"]}})
    moved = {**windows["2024-01-01"][0], "created_at": DAY + timedelta(days=1, hours=23)}
    for partition in DAYS[1:]:
        materialize(project, config, instance, "events", partition)
    # before the old window runs again the moved document is in both (README says so)
    assert landed(project)[0][("s:d0-0", "2024-01-01", 0)] == 1
    materialize(project, config, instance, "events", DAYS[0])
    now = {
        "2024-01-01": windows["2024-01-01"][1:],
        "2024-01-02": [{**windows["2024-01-02"][0], "items": []}, *windows["2024-01-02"][1:], moved],
        "2024-01-03": windows["2024-01-03"][:1],
    }
    assert landed(project) == expected(now)

    # a window whose documents are all gone is emptied, child rows included
    events_collection.delete_many({"_id": "d2-0"})
    materialize(project, config, instance, "events", DAYS[2])
    assert landed(project) == expected({k: v for k, v in now.items() if k != "2024-01-03"})


def test_by_id_windows_select_objectids_by_creation_time(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, standin: MongoStandIn
) -> None:
    def oid(at: datetime, tail: int) -> ObjectId:
        return ObjectId(ObjectId.from_datetime(at).binary[:4] + tail.to_bytes(8, "big"))

    documents = [
        {"_id": oid(DAY, 1), "n": 0},  # the window's first second
        {"_id": oid(DAY + timedelta(days=1, seconds=-1), 2), "n": 1},  # its last second
        {"_id": oid(DAY + timedelta(days=1), 0), "n": 2},  # the next window's first ObjectId
        {"_id": oid(DAY - timedelta(seconds=1), 3), "n": 3},  # before the first window
        {"_id": 7, "n": 4},  # not an ObjectId: in no window
    ]
    standin.client.shop.logs.insert_many(documents)
    result = materialize(project, config, instance, "logs", DAYS[0])
    assert sorted(n for (n,) in project.query("select n from mongo_shop.logs")) == [0, 1]
    materialize(project, config, instance, "logs", DAYS[1])
    assert sorted(n for (n,) in project.query("select n from mongo_shop.logs")) == [0, 1, 2]
    materialization = result.asset_materializations_for_node(OP)[0]
    assert materialization.metadata["documents_outside_windows"].value == 2
