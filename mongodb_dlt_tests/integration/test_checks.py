"""Asset checks through Dagster: ``rows_match_source`` and ``no_type_drift`` on every collection, evaluated by the
real loader against the MongoDB stand-in and DuckDB, subset with their assets, absent for a failed collection."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from bson import ObjectId

from mongodb_dlt.checks import NO_TYPE_DRIFT, ROWS_MATCH_SOURCE, rows_match_source
from mongodb_dlt.config import CollectionConfig, ProjectConfig, load_config
from mongodb_dlt.factory import LOADER_RESOURCE_KEY, dlt_asset_factory
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.results import CollectionLoadResult, ExtractStats, RowCounts
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt.testing.commands import CommandError, MongomockCommands
from mongodb_dlt_tests.conftest import Project

CONFIG = """
defaults:
  connection_url: ${MONGODB_URI}
  retries: {max_attempts: 1}
  batch_size: 20
destination:
  type: duckdb
  path: {duckdb}
databases:
  shop:
    collections:
      merged: {}
      replaced: {write_disposition: replace}
      appended: {write_disposition: append}
      events:
        incremental: {cursor_field: ts, initial_value: "2024-01-01T00:00:00Z"}
        write_disposition: append
      limited: {limit: 7}
"""

START = datetime(2024, 1, 1, tzinfo=UTC)
COLLECTIONS = ("merged", "replaced", "appended", "events", "limited")


def key(collection: str) -> dg.AssetKey:
    return dg.AssetKey(["raw_shop", collection])


def insert(standin: MongoStandIn, collection: str, first: int, count: int, **fields: Any) -> None:
    standin.client.shop[collection].insert_many(
        [{"_id": i, "n": i, "ts": START + timedelta(minutes=i), "tags": ["a", "b"], **fields}
         for i in range(first, first + count)]
    )


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """One Dagster instance for the module's runs, all in-process (``dg.materialize``): each test reads its own
    run's events, through its result or its run id (the latest check execution a test reads is its own run's)."""
    home = tmp_path_factory.mktemp("dagster_home")
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def config(project: Project, standin: MongoStandIn) -> ProjectConfig:
    for collection in COLLECTIONS:
        insert(standin, collection, 0, 30)
    return load_config(project.write_config(CONFIG))


def materialize(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, selection: Iterable[str] | None = None
) -> dg.ExecuteInProcessResult:
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    return dg.materialize(
        dlt_asset_factory(config),
        selection=[key(c) for c in selection] if selection is not None else None,
        resources={LOADER_RESOURCE_KEY: loader},
        instance=instance,
        raise_on_error=False,
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    """(collection, check name) -> the check's evaluation in this run."""
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def metadata(evaluation: Any) -> dict[str, Any]:
    return {name: value.value for name, value in evaluation.metadata.items()}


def test_checks_pass_on_clean_loads_of_every_disposition(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    first = materialize(project, config, instance)
    assert first.success
    checks = evaluations(first)
    assert set(checks) == {(c, name) for c in COLLECTIONS for name in (ROWS_MATCH_SOURCE, NO_TYPE_DRIFT)}
    assert all(e.passed for e in checks.values()), {k: metadata(e)["explanation"] for k, e in checks.items()}
    assert checks["merged", ROWS_MATCH_SOURCE].severity == dg.AssetCheckSeverity.ERROR
    assert checks["merged", NO_TYPE_DRIFT].severity == dg.AssetCheckSeverity.WARN
    merged = metadata(checks["merged", ROWS_MATCH_SOURCE])
    assert merged["source_count_before"] == merged["source_count_after"] == merged["warehouse_rows"] == 30
    assert merged["verified"] is True
    limited = metadata(checks["limited", ROWS_MATCH_SOURCE])
    assert (limited["source_count_before"], limited["limit"], limited["warehouse_rows"]) == (30, 7, 7)
    appended = metadata(checks["appended", ROWS_MATCH_SOURCE])
    assert appended["rows_added"] == appended["documents_read"] == 30
    assert "source_count_before" not in appended and "warehouse_rows" not in appended

    # second run: new documents everywhere, one more event at the new documents' last cursor value
    for collection in COLLECTIONS:
        insert(standin, collection, 30, 5)
    standin.client.shop.events.insert_one({"_id": 100, "n": 100, "ts": START + timedelta(minutes=34)})
    second = materialize(project, config, instance)
    assert second.success
    checks = evaluations(second)
    assert all(e.passed for e in checks.values()), {k: metadata(e)["explanation"] for k, e in checks.items()}
    assert metadata(checks["merged", ROWS_MATCH_SOURCE])["warehouse_rows"] == 35
    assert metadata(checks["replaced", ROWS_MATCH_SOURCE])["warehouse_rows"] == 35
    assert metadata(checks["appended", ROWS_MATCH_SOURCE])["rows_added"] == 35
    events = metadata(checks["events", ROWS_MATCH_SOURCE])
    # the document at the first run's last cursor value is read again ($gte) and skipped: that run loaded it
    assert (events["documents_read"], events["skipped_at_boundary"], events["rows_added"]) == (6, 1, 6)
    assert "skipped 1 more at the cursor's last value" in events["explanation"]


def test_a_destination_without_sql_passes_rows_match_source_unverified() -> None:
    result = CollectionLoadResult(
        database="shop", collection="orders", dataset_name="mongo_shop", table_name="orders",
        read=ExtractStats(documents=12),
        row_counts=RowCounts(not_verifiable="destination qdrant cannot be queried with SQL"),
    )
    collection = CollectionConfig(database="shop", name="orders")
    check = rows_match_source(key("orders"), collection, result)
    assert check.passed and check.metadata["verified"].value is False
    assert check.description == (
        "Not verified: destination qdrant cannot be queried with SQL. 12 documents were read."
    )


def hide_from_find(monkeypatch: pytest.MonkeyPatch, collection: str, hidden_ids: list[Any]) -> None:
    """The stand-in's ``find`` (and so its ``getMore``s) skips ``hidden_ids`` while ``count``/``aggregate`` still
    see them: documents that the read misses between the two counts."""
    execute = MongomockCommands.execute

    def hiding(self: MongomockCommands, database: str, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("find") == collection:
            command = {**command, "filter": {"$and": [command.get("filter") or {}, {"_id": {"$nin": hidden_ids}}]}}
        return execute(self, database, command)

    monkeypatch.setattr(MongomockCommands, "execute", hiding)


def test_rows_match_source_fails_when_the_read_misses_documents(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_from_find(monkeypatch, "merged", [3, 4, 5])
    result = materialize(project, config, instance, ["merged"])
    assert result.success  # the load itself worked; its check says the warehouse is short
    check = evaluations(result)["merged", ROWS_MATCH_SOURCE]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    details = metadata(check)
    assert (details["source_count_before"], details["source_count_after"]) == (30, 30)
    assert (details["warehouse_rows"], details["documents_read"]) == (27, 27)
    assert "holds 27 documents, 3 fewer than expected" in details["explanation"]
    assert "did not return documents" in details["explanation"]
    assert evaluations(result)["merged", NO_TYPE_DRIFT].passed


def test_a_filter_the_server_cannot_count_loads_and_fails_the_check_with_the_reason(
    project: Project, config: ProjectConfig, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    execute = MongomockCommands.execute

    def refusing(self: MongomockCommands, database: str, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("aggregate") == "merged":  # count_documents is an aggregation
            raise CommandError(2, "$where is not allowed in this context")
        return execute(self, database, command)

    monkeypatch.setattr(MongomockCommands, "execute", refusing)
    result = materialize(project, config, instance, ["merged"])
    assert result.success and project.scalar("select count(*) from mongo_shop.merged") == 30
    check = evaluations(result)["merged", ROWS_MATCH_SOURCE]
    assert not check.passed and metadata(check)["verified"] is False
    assert check.description == (
        "Could not compare `mongo_shop.merged` with MongoDB: MongoDB could not count the collection's documents: "
        "OperationFailure: $where is not allowed in this context"
    )


def test_rows_match_source_fails_when_merge_keeps_documents_deleted_from_mongodb(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    assert materialize(project, config, instance, ["merged", "replaced"]).success
    for collection in ("merged", "replaced"):
        standin.client.shop[collection].delete_many({"n": {"$lt": 4}})
    result = materialize(project, config, instance, ["merged", "replaced"])
    merged = evaluations(result)["merged", ROWS_MATCH_SOURCE]
    assert not merged.passed
    details = metadata(merged)
    assert (details["source_count_before"], details["warehouse_rows"]) == (26, 30)
    assert "4 more than expected" in details["explanation"] and "merge never deletes" in details["explanation"]
    # replace holds exactly what it read
    assert evaluations(result)["replaced", ROWS_MATCH_SOURCE].passed


def test_no_type_drift_warns_naming_a_field_whose_type_changed(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    standin.client.shop.merged.update_many({}, {"$set": {"address": {"zip": 501, "city": "Holtsville"}}})
    first = materialize(project, config, instance, ["merged"])
    assert evaluations(first)["merged", NO_TYPE_DRIFT].passed

    standin.client.shop.merged.update_one({"_id": 7}, {"$set": {"address.zip": "00501"}})
    second = materialize(project, config, instance, ["merged"])
    assert second.success
    drift = evaluations(second)["merged", NO_TYPE_DRIFT]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    details = metadata(drift)
    assert details["fields"] == ["address.zip"]
    assert details["variant_columns"] == {"merged.address__zip__v_string": "address.zip (string)"}
    assert drift.description == (
        "Type drift: `address.zip` got string values (new column `merged.address__zip__v_string`)"
    )
    assert "`address.zip` holds string values besides int64 ones" in details["explanation"]
    assert "`merged.address__zip__v_string`" in details["explanation"]
    assert evaluations(second)["merged", ROWS_MATCH_SOURCE].passed

    third = materialize(project, config, instance, ["merged"])
    assert evaluations(third)["merged", NO_TYPE_DRIFT].passed  # the variant exists now: nothing new


def test_no_type_drift_warns_when_a_sub_document_goes_json(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    standin.client.shop.merged.update_many({}, {"$set": {"scores": {"math": 1, "art": 2}}})
    assert evaluations(materialize(project, config, instance, ["merged"]))["merged", NO_TYPE_DRIFT].passed

    # keys that look like data (ObjectIds): a data-keyed map lands whole as JSON
    standin.client.shop.merged.update_one({"_id": 3}, {"$set": {"scores": {str(ObjectId()): 1, str(ObjectId()): 2}}})
    drift = evaluations(materialize(project, config, instance, ["merged"]))["merged", NO_TYPE_DRIFT]
    assert not drift.passed
    details = metadata(drift)
    assert details["fields"] == ["scores"]
    assert details["json_columns"] == {"merged.scores": "scores (json)"}
    assert "no longer flattened into `scores__math`, `scores__art`" in details["explanation"]
    assert drift.description == "Type drift: `scores` landed as JSON (new column `merged.scores`)"


def test_no_type_drift_takes_a_first_load_as_the_baseline(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    # as the demo's theaters: an array deeper than max_table_nesting (2), and a field already holding two types
    standin.client.shop.merged.update_many({}, {"$set": {"location": {"geo": {"coordinates": [-73.9, 40.7]}}}})
    standin.client.shop.merged.update_one({"_id": 4}, {"$set": {"n": "four"}})
    first = evaluations(materialize(project, config, instance, ["merged"]))["merged", NO_TYPE_DRIFT]
    assert first.passed
    details = metadata(first)
    assert details["first_load"] is True
    assert details["json_columns"] == {"merged.location__geo__coordinates": "location.geo.coordinates (json)"}
    assert details["variant_columns"] == {"merged.n__v_string": "n (string)"}
    assert first.description == (
        "First load, the baseline later loads are compared with: `n` holds string values besides int64 ones "
        "(column `merged.n__v_string`); `location.geo.coordinates` is stored as JSON (column "
        "`merged.location__geo__coordinates`)"
    )

    again = evaluations(materialize(project, config, instance, ["merged"]))["merged", NO_TYPE_DRIFT]
    assert again.passed and metadata(again)["first_load"] is False

    # what a later load adds at that depth is drift
    standin.client.shop.merged.update_one({"_id": 5}, {"$set": {"location.geo.bounds": [0.5, 1.5]}})
    later = evaluations(materialize(project, config, instance, ["merged"]))["merged", NO_TYPE_DRIFT]
    assert not later.passed and metadata(later)["first_load"] is False
    assert later.description == (
        "Type drift: `location.geo.bounds` landed as JSON (new column `merged.location__geo__bounds`)"
    )


def test_a_check_executed_on_its_own_fails_saying_it_runs_with_its_asset(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    # what a check's "Execute" button launches: a run selecting the check's key only
    standin.clear_commands()
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    result = dg.materialize(
        dlt_asset_factory(config),
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(key("merged"), ROWS_MATCH_SOURCE)),
        resources={LOADER_RESOURCE_KEY: loader},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert result.get_asset_check_evaluations() == [] and result.get_asset_materialization_events() == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.error.message.strip() == (
        "dagster._core.definitions.events.Failure: Asset checks are evaluated by their collection's load, from the "
        "counts and columns it measured, and do not run on their own: materialize raw_shop/merged to run its "
        "checks. Nothing was read or loaded."
    )
    assert standin.commands_seen("shop") == []


def test_checks_run_only_for_the_selected_collections(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    standin.clear_commands()
    result = materialize(project, config, instance, ["replaced"])
    assert result.success
    assert set(evaluations(result)) == {("replaced", ROWS_MATCH_SOURCE), ("replaced", NO_TYPE_DRIFT)}
    counted = {c.get("aggregate") for c in standin.commands_seen("shop") if "aggregate" in c}
    assert counted == {"replaced"}  # only the selected collection was counted


def test_a_failed_collection_reports_no_check_and_its_siblings_do(
    project: Project, config: ProjectConfig, standin: MongoStandIn, instance: dg.DagsterInstance
) -> None:
    standin.fail_collection("shop", "merged", code=13, message="not authorized on shop to execute command")
    result = materialize(project, config, instance, ["merged", "appended"])
    assert not result.success
    assert set(evaluations(result)) == {("appended", ROWS_MATCH_SOURCE), ("appended", NO_TYPE_DRIFT)}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "1 of 2 collection(s) of shop failed: merged: OperationFailure" in failure.step_failure_data.error.message
    # Dagster keeps the failed collection's checks planned; the run's failure makes them "execution failed"
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(key("merged"), ROWS_MATCH_SOURCE)]
    )
    [record] = records.values()
    assert record.run_id == result.run_id and record.status.value == "PLANNED"
