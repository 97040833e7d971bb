"""A backfill of 12 daily partitions through Dagster's own machinery: the backfill daemon makes one run per partition
(the multi-asset's backfill policy), the queued run coordinator starts three at a time, each in a process of its own,
all loading one collection into one PostgreSQL dataset. The warehouse ends exact: every document in its window
once, its array elements once; a partition run again changes nothing; a document whose field moved to another window
is in one place once both windows ran again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG

from mongodb_dlt.config import load_config
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.factory import LOADER_RESOURCE_KEY, dlt_asset_factory
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.postgres import PostgresServer

CONFIG = """
defaults:
  retries: {max_attempts: 1}
destination: {destination}
databases:
  shop:
    collections:
      events:
        partitions: {by: created_at, every: day, start: "2024-03-01"}
"""
START = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = 12
PER_DAY = 25
KEY = dg.AssetKey(["raw_shop", "events"])
CONCURRENT_RUNS = 3


def documents() -> list[dict[str, Any]]:
    return [
        {"_id": f"{day}-{i}", "created_at": START + timedelta(days=day, minutes=37 * i), "items": list(range(i % 4))}
        for day in range(DAYS)
        for i in range(PER_DAY)
    ]


def partition(created_at: datetime) -> str:
    return created_at.strftime("%Y-%m-%d")


def expected(docs: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str, int]]]:
    root = Counter((f"s:{d['_id']}", partition(d["created_at"])) for d in docs)
    children = Counter((f"s:{d['_id']}", partition(d["created_at"]), v) for d in docs for v in d["items"])
    return root, children


def landed(project: Project) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str, int]]]:
    root = Counter(project.query("select _mongo_key, _mongo_partition from mongo_shop.events"))
    children = Counter(
        project.query("select _mongo_root_key, _mongo_partition, value from mongo_shop.events__items")
    )
    return root, children


@pytest.fixture
def daemon_project(
    tmp_path: Path, standin: MongoStandIn, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    project = Project.create(tmp_path / "project", postgres_server.new_database("backfill")).enter(standin, monkeypatch)
    project.write_config(CONFIG)
    home = project.root / "dagster_home"
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": CONCURRENT_RUNS, "dequeue_interval_seconds": 1},
        },
        "telemetry": {"enabled": False},
    }))
    (project.root / "workspace.yaml").write_text(
        yaml.safe_dump({"load_from": [{"python_module": "mongodb_dlt.definitions"}]})
    )
    yield project


def start_daemon(project: Project) -> subprocess.Popen[bytes]:
    daemon = shutil.which("dagster-daemon", path=str(Path(sys.executable).parent))
    assert daemon is not None
    log = (project.root / "daemon.log").open("wb")
    return subprocess.Popen(
        [daemon, "run", "-w", str(project.root / "workspace.yaml")],
        cwd=project.root,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str, count: int, timeout: float) -> list[Any]:
    """The backfill's run records once it has ``count`` runs and all of them finished (the backfill's own status is
    updated by the daemon's next pass, 30 s later: the runs' statuses say it first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = instance.get_run_records(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        if len(records) == count and all(record.dagster_run.is_finished for record in records):
            return records
        time.sleep(0.25)
    raise TimeoutError(f"backfill {backfill_id}: {len(records)} run(s), not all finished, after {timeout} s")


def run_partition(tags: dict[str, str]) -> str:
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
    assert start == end, f"a run of partitions {start} to {end}"
    return start


def most_at_once(records: list[Any]) -> int:
    """The most runs that were running at one moment."""
    events = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_a_backfill_of_twelve_days_runs_several_at_once_and_lands_exact(
    daemon_project: Project, standin: MongoStandIn
) -> None:
    project = daemon_project
    docs = documents()
    standin.client.shop.events.insert_many(docs)
    config = load_config(project.config)
    names = [partition(START + timedelta(days=day)) for day in range(DAYS)]
    with dg.DagsterInstance.from_config(str(project.root / "dagster_home")) as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="events12",
            asset_graph=build_definitions(config).resolve_asset_graph(),
            partition_names=names,
            asset_selection=[KEY],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)  # before the daemon starts: its first pass takes it
        daemon = start_daemon(project)
        try:
            records = backfill_runs(instance, backfill.backfill_id, DAYS, timeout=240)
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=60)
        statuses = Counter(record.dagster_run.status for record in records)
        assert statuses == {dg.DagsterRunStatus.SUCCESS: DAYS}, (project.root / "daemon.log").read_text()[-3000:]
        # one run per partition (a run of a range would carry its two ends)
        assert sorted(run_partition(record.dagster_run.tags) for record in records) == names
        assert most_at_once(records) >= 2  # the queue started several partitions' runs at once

    assert landed(project) == expected(docs)

    # a partition run again changes nothing; a moved document is in one place once both windows ran again
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    assets = dlt_asset_factory(config)

    def materialize(key: str) -> None:
        with dg.instance_for_test() as local:
            result = dg.materialize(assets, partition_key=key, resources={LOADER_RESOURCE_KEY: loader},
                                    instance=local)
        assert result.success

    materialize(names[4])
    assert landed(project) == expected(docs)
    moved = docs[3]
    new_time = START + timedelta(days=9, hours=5)
    standin.client.shop.events.update_one({"_id": moved["_id"]}, {"$set": {"created_at": new_time}})
    materialize(names[9])
    materialize(names[0])
    assert landed(project) == expected([{**d, "created_at": new_time} if d is moved else d for d in docs])
