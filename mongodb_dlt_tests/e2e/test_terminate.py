"""A terminated run (the UI's Terminate, a pod stopped: Dagster interrupts the step) stops its loads promptly and
records exactly what committed: each committed collection as materialized with its checks, the others not at all,
and the warehouse holds exactly the committed rows; a re-execution loads the rest once.

One stand-in, one project and one Dagster instance (with its code server) for the module. Runs are launched and
terminated as the UI does: through the code server, which starts the run worker in a subprocess and forwards the
termination to it, and the run worker to the step's process. The stand-in's ``hold`` keeps a collection mid-read
for as long as a test needs; nothing waits on a clock.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import mongomock
import pytest
from dagster._core.workspace.context import WorkspaceRequestContext

from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.stopping import LoadStop, LoadStopped
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.e2e.dagster_runs import (
    graphql,
    launch,
    materialized_keys,
    reexecute_from_asset_failure,
    step_failure_messages,
    wait_for_run,
)

CONFIG = """
defaults:
  connection_url: ${MONGODB_URI}
  retries: {max_attempts: 1}
  batch_size: 20
destination: {type: duckdb, path: "{duckdb}"}
databases:
  shop:
    max_parallel_collections: 2
    collections:
      orders: {}
      pending: {}
      events: {}
"""
DOCUMENTS = {"orders": 70, "pending": 50, "events": 90}
KEY = {name: dg.AssetKey(["raw_shop", name]) for name in DOCUMENTS}
RUNS_START_AT_ONCE = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
DEADLINE_SECONDS = 150


@dataclass(frozen=True)
class Site:
    project: Project
    standin: MongoStandIn
    instance: dg.DagsterInstance
    context: WorkspaceRequestContext


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The module's stand-in, project (Dagster home, dlt working folder, DuckDB file) and Dagster instance. The code
    server starts with the environment pointing at the project, and the runs it launches inherit it."""
    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(MongoStandIn(mongomock.MongoClient()))
        for name, count in DOCUMENTS.items():
            standin.client.shop[name].insert_many(
                [{"_id": i, "n": i, "tags": [f"t{k}" for k in range(i % 3)]} for i in range(count)]
            )
        project = Project.create(tmp_path_factory.mktemp("terminate") / "project")
        project.write_config(CONFIG)
        instance = stack.enter_context(
            dg.instance_for_test(
                temp_dir=str(project.root / "dagster_home"), overrides=RUNS_START_AT_ONCE, set_dagster_home=False
            )
        )
        environment = stack.enter_context(pytest.MonkeyPatch.context())
        project.enter(standin, environment)
        context = stack.enter_context(graphql(instance, project.root))
        yield Site(project, standin, instance, context)


def until(condition: Callable[[], bool], what: str, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return {(e.asset_key.path[-1], e.check_name): e.passed for e in evaluations}


def finds(standin: MongoStandIn, collection: str) -> list[dict]:
    return [c for c in standin.commands_seen("shop", collection) if "find" in c]


def rows(project: Project, table: str) -> list[tuple]:
    """Each root row's key and how often it is there; [] when the table does not exist."""
    if table not in project.tables("mongo_shop"):
        return []
    return sorted(project.query(f"SELECT _mongo_key, count(*) FROM mongo_shop.{table} GROUP BY 1"))


def every_document_once(collection: str) -> list[tuple]:
    return sorted((f"n:{i}", 1) for i in range(DOCUMENTS[collection]))


def rows_no_completed_load_owns(project: Project) -> int:
    tables = sorted(project.tables("mongo_shop"))
    if not tables:
        return 0
    union = " UNION ALL ".join(f"SELECT _dlt_load_id FROM mongo_shop.{t}" for t in tables)
    return int(project.scalar(
        f"SELECT count(*) FROM ({union}) WHERE _dlt_load_id NOT IN (SELECT load_id FROM mongo_shop._dlt_loads)"
    ))


def test_a_terminated_run_records_the_committed_collection_and_a_reexecution_loads_the_rest(
    site: Site, record_property: Callable[[str, object], None]
) -> None:
    project, standin, instance = site.project, site.standin, site.instance
    standin.hold("shop", "pending")  # its read waits at the stand-in: mid-read when the run is terminated
    deadline = time.monotonic() + DEADLINE_SECONDS
    run_id = launch(site.context, [KEY["orders"], KEY["pending"]])

    # orders has committed and its materialization and checks are recorded; pending's read waits for its first
    # reply (the count before the read, for rows_match_source)
    until(lambda: len(check_evaluations(instance, run_id)) == 2 and bool(standin.commands_seen("shop", "pending")),
          "orders is reported and pending is reading", deadline)
    assert materialized_keys(instance, run_id) == {KEY["orders"]}
    signalled = time.monotonic()
    assert instance.run_launcher.terminate(run_id)
    run = wait_for_run(instance, run_id, timeout=max(1.0, deadline - time.monotonic()))
    record_property("seconds_from_termination_to_run_canceled", round(time.monotonic() - signalled, 2))

    assert run.status == dg.DagsterRunStatus.CANCELED, step_failure_messages(instance, run_id)
    assert materialized_keys(instance, run_id) == {KEY["orders"]}
    assert check_evaluations(instance, run_id) == {("orders", "rows_match_source"): True,
                                                   ("orders", "no_type_drift"): True}
    [stopped] = [entry.user_message for entry in instance.all_logs(run_id)
                 if entry.user_message.startswith("The run was terminated")]
    assert "Reported, their loads committed: raw_shop/orders. Not loaded " in stopped
    assert "raw_shop/pending." in stopped
    seconds = re.search(r"stopped ([0-9.]+)s after the signal", stopped)
    assert seconds is not None
    record_property("seconds_from_signal_to_step_end", float(seconds[1]))
    # the warehouse holds exactly what Dagster recorded: every order once, nothing of pending
    assert rows(project, "orders") == every_document_once("orders")
    assert rows(project, "pending") == []
    assert rows_no_completed_load_owns(project) == 0

    standin.release("shop", "pending")
    standin.clear_commands()
    child = wait_for_run(instance, reexecute_from_asset_failure(site.context, run_id),
                         timeout=max(1.0, deadline - time.monotonic()))
    assert child.status == dg.DagsterRunStatus.SUCCESS, step_failure_messages(instance, child.run_id)
    assert materialized_keys(instance, child.run_id) == {KEY["pending"]}
    assert not finds(standin, "orders")
    assert rows(project, "pending") == every_document_once("pending")
    assert rows(project, "orders") == every_document_once("orders")
    assert rows_no_completed_load_owns(project) == 0


def test_a_stopped_load_ends_at_the_next_batch_and_writes_nothing(site: Site) -> None:
    """The stop comes while the read waits for its first reply: the reply is the last thing read (no getMore
    follows), nothing reaches the warehouse, and the next load is exact."""
    project, standin = site.project, site.standin
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    events = config.databases["shop"].collections["events"]
    stop = LoadStop()
    standin.hold("shop", "events")
    standin.clear_commands()
    deadline = time.monotonic() + DEADLINE_SECONDS
    results = []
    load = threading.Thread(target=lambda: results.append(loader.load_collection(events, "mongo_shop", stop=stop)))
    load.start()
    until(lambda: bool(finds(standin, "events")), "the read has sent its find", deadline)
    stop.request()
    standin.release("shop", "events")
    load.join(timeout=max(1.0, deadline - time.monotonic()))
    [result] = results
    assert not result.succeeded and result.error is not None and result.error.startswith("stopped before its load")
    assert [c for c in standin.commands_seen("shop", "events") if "getMore" in c] == []
    assert rows(project, "events") == []

    loaded = loader.load_collection(events, "mongo_shop")
    assert loaded.succeeded, loaded.error
    assert rows(project, "events") == every_document_once("events")


def test_a_stop_waits_for_the_load_committing_and_lets_no_other_load_in() -> None:
    """``LoadStop``: one load commits per turn of the caller, a stop waits until the committing load's result is
    released, and a load that asks to commit after the stop is refused."""
    stop = LoadStop()
    order: list[str] = []
    with stop.commits_allowed():
        stop.admit("first")
        order.append("first admitted")
        second_refused = threading.Event()

        def second() -> None:
            with contextlib.suppress(LoadStopped):
                stop.admit("second")  # waits: the turn is taken; the stop below refuses it
                order.append("second admitted")
            second_refused.set()

        asking = threading.Thread(target=second)
        asking.start()

        def commit_first() -> None:
            stop.requested.wait()  # the stop has been asked for: it must now wait for this release
            order.append("first released")
            stop.release("first")

        releasing = threading.Thread(target=commit_first)
        releasing.start()
        stop.request()
        order.append("stop returned")
        asking.join()
        releasing.join()
    assert second_refused.is_set()
    assert order == ["first admitted", "first released", "stop returned"]
