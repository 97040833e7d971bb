"""End to end: YAML -> Dagster (multiprocess executor, GraphQL launches) -> our source over a real socket to the
MongoDB stand-in -> dlt -> DuckDB. Each test asserts what a user would check in the warehouse and in Dagster."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import mongomock
import pytest
from bson import Decimal128, ObjectId
from dagster._core.workspace.context import WorkspaceRequestContext

from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.e2e.dagster_runs import (
    execute,
    graphql,
    launch,
    materialization_metadata,
    materialized_keys,
    reexecute_from_asset_failure,
    step_failure_messages,
    wait_for_run,
)

CONFIG = """
defaults:
  connection_url: ${MONGODB_URI}
  retries: {max_attempts: 3, backoff_seconds: 0.1}
  batch_size: 50
destination:
  type: duckdb
  path: {duckdb}
dataset_prefix: mongo
databases:
  shop:
    max_parallel_collections: 3
    collections:
      orders: {}
      customers: {}
      events:
        incremental: {cursor_field: ts, initial_value: "2024-01-01T00:00:00Z"}
        write_disposition: append
  crm: [contacts]
"""

ORDERS, CUSTOMERS, EVENTS, CONTACTS = 120, 40, 200, 30
START = datetime(2024, 1, 1, tzinfo=UTC)

KEY = {
    "orders": dg.AssetKey(["raw_shop", "orders"]),
    "customers": dg.AssetKey(["raw_shop", "customers"]),
    "events": dg.AssetKey(["raw_shop", "events"]),
    "contacts": dg.AssetKey(["raw_crm", "contacts"]),
}
SHOP = [KEY["orders"], KEY["customers"], KEY["events"]]
# Launched runs start at once in a subprocess, as with `dagster dev` (no queue daemon in tests).
RUNS_START_AT_ONCE = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}


def insert_events(standin: MongoStandIn, first: int, count: int) -> None:
    standin.client.shop.events.insert_many(
        [{"_id": ObjectId(), "seq": i, "ts": START + timedelta(minutes=i), "kind": "click"}
         for i in range(first, first + count)]
    )


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """One Dagster instance for the module. Runs reach it through the instance reference Dagster hands to every
    process it starts (steps, code server, run workers); each test reads its own runs, by run id or as the latest
    materialization right after its own run."""
    home = tmp_path_factory.mktemp("dagster_home")
    with dg.instance_for_test(
        temp_dir=str(home), overrides=RUNS_START_AT_ONCE, set_dagster_home=False
    ) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def seeded(project: Project, standin: MongoStandIn) -> Project:
    return seed(project, standin)


def seed(project: Project, standin: MongoStandIn) -> Project:
    shop = standin.client.shop
    shop.orders.insert_many(
        [
            {
                "_id": ObjectId(),
                "number": i,
                "total": Decimal128(f"{i}.25"),
                "placed_at": START + timedelta(hours=i),
                "items": [{"sku": f"sku-{j}", "qty": j + 1} for j in range(i % 3 + 1)],
            }
            for i in range(ORDERS)
        ]
    )
    shop.customers.insert_many([{"_id": ObjectId(), "name": f"customer {i}", "vip": i % 2 == 0}
                                for i in range(CUSTOMERS)])
    insert_events(standin, 0, EVENTS)
    standin.client.crm.contacts.insert_many([{"_id": ObjectId(), "email": f"c{i}@example.com"}
                                             for i in range(CONTACTS)])
    project.write_config(CONFIG)
    return project


def count(project: Project, table: str) -> int:
    return int(project.scalar(f"select count(*) from {table}"))


def finds_on(standin: MongoStandIn, database: str, collection: str) -> list[dict]:
    return [c for c in standin.commands_seen(database, collection) if "find" in c]


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    """(collection, check) -> passed, for every check evaluated in the run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return {(e.asset_key.path[-1], e.check_name): e.passed for e in evaluations}


def test_full_load_of_two_databases_then_idempotent_rerun(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    first = execute(instance)
    assert first.is_success, step_failure_messages(instance, first.run_id)
    assert materialized_keys(instance, first.run_id) == set(KEY.values())
    # every collection's checks ran in the step processes, and pass on a clean load
    assert check_evaluations(instance, first.run_id) == {
        (key.path[-1], check): True for key in KEY.values() for check in ("rows_match_source", "no_type_drift")
    }
    assert count(seeded, "mongo_shop.orders") == ORDERS
    assert count(seeded, "mongo_shop.orders__items") == sum(i % 3 + 1 for i in range(ORDERS))
    assert count(seeded, "mongo_shop.customers") == CUSTOMERS
    assert count(seeded, "mongo_shop.events") == EVENTS
    assert count(seeded, "mongo_crm.contacts") == CONTACTS
    assert seeded.scalar("select total from mongo_shop.orders where number = 7") == Decimal("7.25")

    metadata = materialization_metadata(instance, KEY["orders"])
    assert metadata["rows_loaded"] == ORDERS
    assert metadata["dagster/table_name"] == "mongo_shop.orders"
    assert metadata["child_tables"] == {"orders__items": sum(i % 3 + 1 for i in range(ORDERS))}
    columns = {column.name: column for column in metadata["dagster/column_schema"].columns}
    assert columns["_id"].type == "text" and columns["_id"].description == "_id (objectid)"
    assert columns["total"].type == "decimal" and columns["placed_at"].type == "timestamp"
    assert columns["_mongo_key"].type == "text" and not columns["_mongo_key"].constraints.nullable
    assert metadata["documents_read"] == ORDERS
    assert metadata["column_map"]["orders__items"]["sku"] == "items[].sku (string)"
    assert "`orders`" in metadata["schema_changes"]

    second = execute(instance)
    assert second.is_success
    assert count(seeded, "mongo_shop.orders") == ORDERS
    assert count(seeded, "mongo_shop.orders__items") == sum(i % 3 + 1 for i in range(ORDERS))
    assert count(seeded, "mongo_shop.events") == EVENTS
    assert count(seeded, "mongo_crm.contacts") == CONTACTS
    assert materialization_metadata(instance, KEY["orders"])["schema_changes"] == "no changes"


def test_subset_reads_and_loads_only_the_selected_collection(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    run = execute(instance, [KEY["customers"]])
    assert run.is_success
    assert materialized_keys(instance, run.run_id) == {KEY["customers"]}
    assert seeded.tables("mongo_shop") == {"customers"}
    assert seeded.tables("mongo_crm") == set()
    assert finds_on(standin, "shop", "customers")
    assert not finds_on(standin, "shop", "orders") and not finds_on(standin, "crm", "contacts")


def test_incremental_second_run_reads_only_new_documents(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    assert execute(instance, [KEY["events"]]).is_success
    # no state yet: the run starts from the configured initial_value, and says so
    first = materialization_metadata(instance, KEY["events"])
    assert first["incremental_cursor_before"] == "2024-01-01T00:00:00+00:00 (initial_value: no state yet)"
    insert_events(standin, EVENTS, 25)
    standin.clear_commands()

    assert execute(instance, [KEY["events"]]).is_success
    assert count(seeded, "mongo_shop.events") == EVENTS + 25
    assert count(seeded, "(select distinct seq from mongo_shop.events)") == EVENTS + 25
    metadata = materialization_metadata(instance, KEY["events"])
    assert metadata["rows_loaded"] == 25
    assert metadata["incremental_cursor_before"].startswith(str((START + timedelta(minutes=EVENTS - 1)).date()))
    [find] = finds_on(standin, "shop", "events")
    assert "$gte" in str(find["filter"]) and "ts" in str(find["filter"])
    assert list(find["sort"].items()) == [("ts", 1)]
    assert find["allowDiskUse"] is True  # the server may sort an unindexed cursor field on disk


def test_connection_dropped_mid_cursor_is_retried_without_duplicates(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    standin.drop_connection("shop", "events", after_batches=2, times=1)
    run = execute(instance, [KEY["events"]])
    assert run.is_success, step_failure_messages(instance, run.run_id)
    assert count(seeded, "mongo_shop.events") == EVENTS
    assert materialization_metadata(instance, KEY["events"])["attempts"] == 2


def test_local_state_lost_is_restored_from_the_destination(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    assert execute(instance, [KEY["events"]]).is_success
    shutil.rmtree(seeded.pipelines_dir)
    insert_events(standin, EVENTS, 10)

    assert execute(instance, [KEY["events"]]).is_success
    assert count(seeded, "mongo_shop.events") == EVENTS + 10
    assert materialization_metadata(instance, KEY["events"])["rows_loaded"] == 10


FAILED_COLLECTION_TEST = "test_failed_collection_leaves_siblings_loaded_and_reexecution_repeats_only_it"


@dataclass(frozen=True)
class Reexecution:
    """The runs of test_failed_collection_..., in its own project, stand-in and Dagster instance."""

    project: Project
    standin: MongoStandIn
    instance: dg.DagsterInstance
    parent: dg.DagsterRun
    child: dg.DagsterRun | None
    """None when the parent run did not fail: nothing to re-execute."""


def fail_then_reexecute(
    project: Project, standin: MongoStandIn, instance: dg.DagsterInstance, context: WorkspaceRequestContext
) -> Reexecution:
    """As in the UI: a launch of shop and crm with shop.customers refusing reads, then, with the fault gone, a
    re-execution from asset failure."""
    standin.fail_collection("shop", "customers", code=13, message="not authorized on shop to execute command")
    parent = wait_for_run(instance, launch(context, [*SHOP, KEY["contacts"]]))
    if parent.status != dg.DagsterRunStatus.FAILURE:
        return Reexecution(project, standin, instance, parent, None)
    standin.clear_faults()
    standin.clear_commands()
    child = wait_for_run(instance, reexecute_from_asset_failure(context, parent.run_id))
    return Reexecution(project, standin, instance, parent, child)


@pytest.fixture(scope="module", autouse=True)
def reexecution(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Future[Reexecution] | None]:
    """``fail_then_reexecute`` in a thread from the module's first test on, in a project, stand-in and Dagster
    instance of its own: its code server, run workers and steps run while the other tests run theirs. The code
    server starts here, with the environment and working folder pointing at that project (as the test's own
    fixtures set them); it keeps them, and the processes it launches inherit them, whatever the other tests set
    meanwhile. Not started when its test is not selected."""
    if not any(item.name == FAILED_COLLECTION_TEST for item in request.session.items):
        yield None
        return
    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(MongoStandIn(mongomock.MongoClient()))
        project = seed(Project.create(tmp_path_factory.mktemp("reexecution") / "project"), standin)
        home = str(project.root / "dagster_home")
        instance = stack.enter_context(
            dg.instance_for_test(temp_dir=home, overrides=RUNS_START_AT_ONCE, set_dagster_home=False)
        )
        with pytest.MonkeyPatch.context() as environment:
            project.enter(standin, environment)
            context = stack.enter_context(graphql(instance, project.root))
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="reexecution"))
        yield pool.submit(fail_then_reexecute, project, standin, instance, context)


def test_failed_collection_leaves_siblings_loaded_and_reexecution_repeats_only_it(
    reexecution: Future[Reexecution] | None,
) -> None:
    assert reexecution is not None
    runs = reexecution.result()  # launched and re-executed through the code server since the module started
    seeded, standin, instance, parent, child = runs.project, runs.standin, runs.instance, runs.parent, runs.child
    assert parent.status == dg.DagsterRunStatus.FAILURE
    assert materialized_keys(instance, parent.run_id) == {KEY["orders"], KEY["events"], KEY["contacts"]}
    [message] = step_failure_messages(instance, parent.run_id)
    assert "1 of 3 collection(s) of shop failed" in message
    assert "customers" in message and "not authorized" in message

    assert child is not None
    assert child.status == dg.DagsterRunStatus.SUCCESS, step_failure_messages(instance, child.run_id)
    assert child.asset_selection == {KEY["customers"]}
    assert materialized_keys(instance, child.run_id) == {KEY["customers"]}
    # the failed collection reported no checks; its re-execution runs them
    assert ("customers", "rows_match_source") not in check_evaluations(instance, parent.run_id)
    assert check_evaluations(instance, child.run_id) == {
        ("customers", "rows_match_source"): True, ("customers", "no_type_drift"): True
    }
    # since the fault was cleared, only the failed collection was read
    assert finds_on(standin, "shop", "customers") and not finds_on(standin, "shop", "orders")
    assert count(seeded, "mongo_shop.customers") == CUSTOMERS
    assert count(seeded, "mongo_shop.orders") == ORDERS


def test_password_never_reaches_dagster_events(
    seeded: Project, standin: MongoStandIn, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_uri = standin.uri.replace("mongodb://", "mongodb://loader:Sup3rS3cret@")
    monkeypatch.setenv("MONGODB_URI", secret_uri)
    run = execute(instance, [KEY["contacts"]])
    assert not run.is_success
    logs = [entry.user_message or "" for entry in instance.all_logs(run.run_id)]
    logs += step_failure_messages(instance, run.run_id)
    assert any("contacts" in line for line in logs)
    assert not any("Sup3rS3cret" in line for line in logs)


def test_definitions_load_without_connecting_to_mongodb(seeded: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{listener.getsockname()[1]}/")
        code = (
            "from mongodb_dlt.definitions import defs; "
            "print(len(defs.load_fn().resolve_asset_graph().get_all_asset_keys()))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        assert done.stdout.strip() == "4"
        with pytest.raises(BlockingIOError):
            listener.accept()
