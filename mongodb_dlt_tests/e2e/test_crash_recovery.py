"""Exactly once under a kill at any instant: the crash harness (crash_harness.py) SIGKILLs a load at each
boundary, for every write disposition, into DuckDB and into a real PostgreSQL server, sometimes losing the working
folder too; the next run must leave the warehouse exactly equal to MongoDB: every document once, every child row
once and under its parent.

Each scenario has a project (Dagster home, dlt working folder, DuckDB file) and a stand-in of its own. Its first
load and its killed load run in the harness's forked children, prepared ahead of the test in a thread (``Ahead``):
while a test reruns one scenario's load here, the harness prepares and kills the next ones on another core.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import dlt
import mongomock
import pyarrow as pa
import pytest

from mongodb_dlt.config import load_config
from mongodb_dlt.errors import CollectionBusyError
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.locking import collection_lock
from mongodb_dlt.naming import pipeline_name
from mongodb_dlt.results import CollectionLoadResult
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.e2e.crash_harness import CHUNK_POINTS
from mongodb_dlt_tests.e2e.dagster_runs import graphql, launch, wait_for_run
from mongodb_dlt_tests.postgres import PostgresServer

HARNESS = Path(__file__).with_name("crash_harness.py")
CHUNK = 10
"""``chunk_size`` of the chunk scenarios (batches of 5): the collection is read in 4 to 7 chunks."""
DISPOSITIONS = {
    "merge": "{}",
    "replace": "{write_disposition: replace}",
    "append_incremental": "{write_disposition: append, incremental: {cursor_field: seq}}",
    "append": "{write_disposition: append}",
}


@dataclass(frozen=True)
class Scenario:
    disposition: str
    point: str
    lose_working_folder: bool = False
    destination: str = "duckdb"

    def __str__(self) -> str:
        lost = "-folder_lost" if self.lose_working_folder else ""
        return f"{self.destination}-{self.disposition}-{self.point}{lost}"


SCENARIOS = [
    *(
        Scenario(disposition, point, destination=destination)
        for destination in ("duckdb", "postgres")
        for disposition in DISPOSITIONS
        for point in ("after_extract", "after_normalize", "job_uncommitted", "job_committed", "load_recorded")
    ),
    *(Scenario("merge", "merge_committed", destination=destination) for destination in ("duckdb", "postgres")),
    *(Scenario(disposition, "job_committed", lose_working_folder=True) for disposition in DISPOSITIONS),
    # replace reads in one package: no chunks to die between. A chunk's read dies the same way on both.
    *(
        Scenario(disposition, point, destination=destination)
        for disposition in ("merge", "append", "append_incremental")
        for destination in ("duckdb", "postgres")
        for point in ("chunk_job_committed", "between_chunks")
    ),
    Scenario("merge", "chunk_read"),
    Scenario("merge", "between_chunks", lose_working_folder=True),
]


def document(i: int, items: int) -> dict:
    return {"_id": i, "seq": i, "name": f"order {i}", "items": [{"sku": f"s{i}-{k}", "qty": k} for k in range(items)]}


def write_config(project: Project, disposition: str, chunked: bool = False) -> Path:
    chunks = f"\n          chunk_size: {CHUNK}\n          batch_size: 5" if chunked else ""
    return project.write_config(
        f"""
        defaults:
          retries: {{max_attempts: 1}}{chunks}
        destination: {{destination}}
        databases:
          shop:
            collections:
              orders: {DISPOSITIONS[disposition]}
        """
    )


def load(project: Project) -> CollectionLoadResult:
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    result = loader.load_collection(config.databases["shop"].collections["orders"], "mongo_shop")
    assert result.succeeded, result.error
    return result


@pytest.fixture(scope="module")
def harness() -> Iterator[subprocess.Popen[str]]:
    """One crash harness for the module: it forks a fully imported child per scenario."""
    process = subprocess.Popen(
        [sys.executable, str(HARNESS), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield process
    process.communicate(timeout=60)


def documents_read_file(project: Project) -> Path:
    """Where the harness counts the documents the killed load read (chunked reads only)."""
    return project.root / "documents_read"


def in_harness(harness: subprocess.Popen[str], project: Project, standin: MongoStandIn, point: str | None) -> str:
    """Loads the project's collection in a child of the harness, killed at ``point`` (None: a plain load); returns
    how the child ended: ``killed 9`` or ``exited N``."""
    assert harness.stdin is not None and harness.stdout is not None
    counts = documents_read_file(project)
    counts.unlink(missing_ok=True)
    scenario = {"point": point, "config": str(project.config), "database": "shop", "collection": "orders",
                "pipelines_dir": str(project.pipelines_dir), "env": {"MONGODB_URI": standin.uri, **project.env},
                "count_file": str(counts)}
    harness.stdin.write(json.dumps(scenario) + "\n")
    harness.stdin.flush()
    return harness.stdout.readline().strip()


def prepare(standin: MongoStandIn, project: Project, disposition: str, first_load: Callable[[], None]) -> None:
    """A first load where the disposition keeps history, then changes that the crashed run was to load."""
    orders = standin.client.shop.orders
    if disposition == "append":
        orders.insert_many([document(i, i % 4) for i in range(40)])
        return
    orders.insert_many([document(i, i % 4) for i in range(40)])
    first_load()
    orders.insert_many([document(i, i % 3) for i in range(40, 70)])
    if disposition in ("merge", "replace"):
        for i in range(10):  # arrays grow, empty and disappear
            orders.replace_one({"_id": i}, document(i, 5))
        for i in range(10, 20):
            orders.update_one({"_id": i}, {"$set": {"items": []}})
        for i in range(20, 25):
            orders.update_one({"_id": i}, {"$unset": {"items": ""}})


def assert_exact(project: Project, standin: MongoStandIn, runs: int = 1) -> None:
    """Every document once (``runs`` times for plain append: once per successful run), every array element
    once per copy of its document, and no child row without its parent."""
    documents = list(standin.client.shop.orders.find())
    roots = project.query("SELECT _mongo_key, count(*) FROM mongo_shop.orders GROUP BY 1")
    assert sorted(roots) == sorted((f"n:{d['_id']}", runs) for d in documents), "every document exactly once"
    children = project.query("SELECT _mongo_root_key, count(*) FROM mongo_shop.orders__items GROUP BY 1")
    expected = sorted((f"n:{d['_id']}", runs * len(d["items"])) for d in documents if d.get("items"))
    assert sorted(children) == expected, "every array element exactly once"
    orphans = project.scalar(
        "SELECT count(*) FROM mongo_shop.orders__items c "
        "WHERE NOT EXISTS (SELECT 1 FROM mongo_shop.orders r WHERE r._dlt_id = c._dlt_root_id)"
    )
    assert orphans == 0, "no child row outlives its parent"


def incomplete_rows(project: Project) -> int:
    return int(project.scalar(
        "SELECT count(*) FROM (SELECT _dlt_load_id FROM mongo_shop.orders UNION ALL "
        "SELECT _dlt_load_id FROM mongo_shop.orders__items) "
        "WHERE _dlt_load_id NOT IN (SELECT load_id FROM mongo_shop._dlt_loads)"
    ))


BOUNDARY_TEST = "test_a_kill_at_any_boundary_then_a_rerun_leaves_the_warehouse_exact"


@dataclass(frozen=True)
class Crashed:
    """A scenario after its killed load: its project, its stand-in and how the harness's child ended."""

    project: Project
    standin: MongoStandIn
    outcome: str


class Ahead:
    """Prepares and kills the selected scenarios, in the order their tests run, one after the other in a thread:
    each scenario's project and stand-in are new, its first load (``prepare``) and its killed load run in children
    of the harness, and only the changes between them run here (the stand-in's data). ``take`` waits for one."""

    def __init__(
        self, harness: subprocess.Popen[str], scenarios: list[Scenario], root: Path, postgres: PostgresServer | None
    ) -> None:
        self.harness = harness
        self.projects = {
            scenario: Project.create(
                root / str(scenario),
                postgres.new_database("crash") if postgres is not None and scenario.destination == "postgres" else None,
            )
            for scenario in scenarios
        }
        self.standins: list[MongoStandIn] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="crash-ahead")
        self.crashed = {scenario: self.pool.submit(self._crash, scenario) for scenario in scenarios}

    def _crash(self, scenario: Scenario) -> Crashed:
        project = self.projects[scenario]
        standin = MongoStandIn(mongomock.MongoClient()).start()
        self.standins.append(standin)
        write_config(project, scenario.disposition, chunked=scenario.point in CHUNK_POINTS)

        def first_load() -> None:
            outcome = in_harness(self.harness, project, standin, None)
            assert outcome == "exited 0", f"the first load failed: {outcome}"

        prepare(standin, project, scenario.disposition, first_load)
        return Crashed(project, standin, in_harness(self.harness, project, standin, scenario.point))

    def take(self, scenario: Scenario) -> Crashed:
        return self.crashed[scenario].result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        for standin in self.standins:
            standin.stop()


@pytest.fixture(scope="module")
def ahead(
    harness: subprocess.Popen[str], request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ahead]:
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if item.module is request.module and item.originalname == BOUNDARY_TEST
    ]
    # PostgreSQL scenarios each load into a database of their own on the session's server
    postgres = (
        request.getfixturevalue("postgres_server")
        if any(scenario.destination == "postgres" for scenario in selected) else None
    )
    scenarios = Ahead(harness, selected, tmp_path_factory.mktemp("crashes"), postgres)
    yield scenarios
    scenarios.close()


@pytest.fixture
def crashed(ahead: Ahead, scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Iterator[Crashed]:
    """The test's scenario, killed, with the environment and working folder pointing at its project."""
    taken = ahead.take(scenario)
    taken.project.enter(taken.standin, monkeypatch)
    yield taken
    taken.standin.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_a_kill_at_any_boundary_then_a_rerun_leaves_the_warehouse_exact(scenario: Scenario, crashed: Crashed) -> None:
    project, standin = crashed.project, crashed.standin
    assert crashed.outcome == f"killed {signal.SIGKILL.value}", (
        f"the load was not killed at {scenario.point}: {crashed.outcome}"
    )
    committing = scenario.point in ("job_committed", "chunk_job_committed")
    if scenario.point == "merge_committed" or (committing and scenario.disposition != "merge"):
        # the hazard is real: the warehouse holds rows that no completed load owns (merge jobs land in staging)
        assert incomplete_rows(project) > 0
    if scenario.lose_working_folder:
        shutil.rmtree(project.pipelines_dir)

    # plain append adds every run's documents once, the dead run's too when its load was recorded complete (a
    # chunked read's committed chunks are part of the read the next run finishes)
    dead_run_counts = scenario.disposition == "append" and scenario.point == "load_recorded"
    resumed = load(project)
    assert_exact(project, standin, runs=2 if dead_run_counts else 1)
    assert incomplete_rows(project) == 0
    if scenario.point in CHUNK_POINTS:
        # the next run reads on after the last committed chunk: the killed run's chunk in flight is read twice
        killed_read = sum(int(line) for line in documents_read_file(project).read_text().split())
        total = killed_read + resumed.documents_read + resumed.skipped_at_boundary
        to_read = len(list(standin.client.shop.orders.find()))
        if scenario.disposition == "append_incremental":
            # the documents inserted after the first load; each chunk of an incremental read starts at the last
            # value of the one before, and reads the documents there again (skipped)
            to_read = 30 + 1 + resumed.chunks
        assert killed_read > 0 and total <= to_read + CHUNK, (killed_read, total, to_read)

    # and the run after that changes nothing (plain append adds its own copy of every document, once)
    load(project)
    assert_exact(project, standin, runs=(2 + dead_run_counts) if scenario.disposition == "append" else 1)


def _wait_for_lock_holder(lock_file: Path, deadline: float) -> int:
    while not (lock_file.exists() and lock_file.read_text()):
        assert time.monotonic() < deadline, "the step never started loading"
        time.sleep(0.05)
    return int(json.loads(lock_file.read_text())["pid"])


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_until_free(lock_file: Path, deadline: float) -> None:
    while True:
        try:
            with collection_lock(lock_file, "test"):
                return
        except CollectionBusyError:
            assert time.monotonic() < deadline, "the orphaned step never finished"
            time.sleep(0.1)


@pytest.mark.parametrize("launched_by", ["code_server", "cli"])
def test_a_killed_run_process_ends_its_run_and_keeps_a_second_writer_out(
    launched_by: str, project: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    """The run process (not the step) is SIGKILLed mid-load: the step finishes alone, a second load of the same
    collection meanwhile is refused with the holder's PID and run, and the dead run ends FAILURE exactly once:
    marked by the code server that launched it, or, when no one watches it (`dagster asset materialize`), by the
    orphaned step. Either way the warehouse ends exact."""
    standin.client.shop.orders.insert_many([document(i, i % 3) for i in range(300)])
    project.write_config(
        """
        defaults: {batch_size: 20, retries: {max_attempts: 1}}
        destination: {type: duckdb, path: "{duckdb}"}
        databases:
          shop: [orders]
        """
    )
    # the step's reads wait at the stand-in until released: it is mid-load for as long as the test needs
    standin.hold("shop", "orders")
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    orders = config.databases["shop"].collections["orders"]
    lock_file = loader.destination.working_dir / f"{pipeline_name(orders.database, orders.name)}.lock"
    deadline = time.monotonic() + 150

    with contextlib.ExitStack() as stack:
        if launched_by == "code_server":
            context = stack.enter_context(graphql(instance, project.root))
            launch(context, [dg.AssetKey(["raw_shop", "orders"])])
        else:
            cli = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
                 "mongodb_dlt.definitions", "--select", "raw_shop/orders"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            stack.callback(cli.wait)
        step = _wait_for_lock_holder(lock_file, deadline)
        run_worker = _parent_of(step)
        run_id = json.loads(lock_file.read_text())["run_id"]
        os.kill(run_worker, signal.SIGKILL)

        busy = loader.load_collection(orders, "mongo_shop")
        assert not busy.succeeded
        assert f"PID {step}" in (busy.error or "") and run_id in (busy.error or "")

        if launched_by == "code_server":
            # the code server that launched the run sees its process die and ends the run, while the step waits
            wait_for_run(instance, run_id, timeout=max(1.0, deadline - time.monotonic()))
        standin.release("shop", "orders")  # the orphaned step reads on, alone, and finishes its load
        _wait_until_free(lock_file, deadline)
        run = wait_for_run(instance, run_id, timeout=max(1.0, deadline - time.monotonic()))
    assert run.status == dg.DagsterRunStatus.FAILURE
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert len(failures) == 1
    if launched_by == "cli":
        assert f"(PID {run_worker}) died" in (failures[0].event_log_entry.dagster_event.message or "")

    standin.clear_faults()
    assert_exact(project, standin)
    load(project)
    assert_exact(project, standin)


def test_tables_written_before_load_ids_existed_take_the_column(project: Project, standin: MongoStandIn) -> None:
    """A table from a version that wrote no `_dlt_load_id` gets the column (NULL in its old, complete rows)."""
    write_config(project, "merge")
    earlier = dlt.pipeline(
        "mongodb_dlt__shop__orders", pipelines_dir=str(project.root / "earlier"),
        destination=dlt.destinations.duckdb(str(project.duckdb_path)), dataset_name="mongo_shop",
    )
    earlier.run(
        pa.table({"_mongo_key": ["n:0"], "_dlt_id": ["a"], "name": ["order 0"]}),
        table_name="orders", write_disposition="merge", primary_key="_mongo_key",
    )
    standin.client.shop.orders.insert_many([document(i, 2) for i in range(5)])
    load(project)
    assert_exact(project, standin)
