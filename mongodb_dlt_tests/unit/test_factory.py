"""Spec generation, subsetting and failure semantics of the factory, with the loader replaced by a fake that
records what it was asked to load (the real loader is covered end to end)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from mongodb_dlt.checks import NO_TYPE_DRIFT, ROWS_MATCH_SOURCE
from mongodb_dlt.config import CollectionConfig, DestinationConfig, ProjectConfig, load_config
from mongodb_dlt.definitions import ALL_COLLECTIONS_JOB, build_definitions
from mongodb_dlt.factory import (
    DESTINATION_TAG,
    LOADER_RESOURCE_KEY,
    dlt_asset_factory,
)
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.stopping import LoadStop
from mongodb_dlt.results import CollectionLoadResult, ExtractStats

YAML = """
defaults:
  connection_url: ${MONGODB_URI}
destination: {type: duckdb, path: warehouse.duckdb}
databases:
  sample_mflix: [comments, movies, theaters, users]
  sample_analytics:
    key_prefix: analytics/raw
    dataset: analytics_raw
    schedule: "0 * * * *"
    max_parallel_collections: 2
    collections:
      accounts: {}
      transactions: {incremental: {cursor_field: date}, write_disposition: append}
      customers: {tags: {pii: "true"}}
"""

CALLS: list[tuple[str, str]] = []
COUNTED: list[str] = []
FAILING: set[str] = set()
CONCURRENCY = {"now": 0, "peak": 0}
_lock = threading.Lock()


class RecordingLoader(MongoDltLoader):
    """Pretends to load: records the call, fails the collections named in FAILING."""

    def load_collection(
        self,
        collection: CollectionConfig,
        dataset_name: str,
        log: logging.Logger | None = None,
        run_id: str | None = None,
        count_rows: bool = False,
        stop: LoadStop | None = None,
    ) -> CollectionLoadResult:
        with _lock:
            CALLS.append((collection.database, collection.name))
            if count_rows:
                COUNTED.append(collection.name)
            CONCURRENCY["now"] += 1
            CONCURRENCY["peak"] = max(CONCURRENCY["peak"], CONCURRENCY["now"])
        time.sleep(0.05)
        with _lock:
            CONCURRENCY["now"] -= 1
        return CollectionLoadResult(
            database=collection.database,
            collection=collection.name,
            dataset_name=dataset_name,
            table_name=collection.table_name,
            read=ExtractStats(rows={collection.table_name: len(collection.name)}),
            columns=[("_id", "text", False)],
            error=f"OperationFailure: boom in {collection.name}" if collection.name in FAILING else None,
        )


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectConfig:
    # no server to ping: the factory leaves an unresolvable URL to the (recording) loader
    monkeypatch.delenv("MONGODB_URI", raising=False)
    CALLS.clear()
    COUNTED.clear()
    FAILING.clear()
    CONCURRENCY.update(now=0, peak=0)
    path = tmp_path / "databases.yaml"
    path.write_text(YAML)
    return load_config(path)


def materialize(
    config: ProjectConfig,
    selection: list[str] | dg.AssetSelection | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        dlt_asset_factory(config),
        selection=selection,
        resources={LOADER_RESOURCE_KEY: RecordingLoader.from_config(DestinationConfig())},
        instance=instance,
        raise_on_error=False,
    )


def test_one_multi_asset_per_database_with_one_spec_per_collection(config: ProjectConfig) -> None:
    mflix, analytics = dlt_asset_factory(config)
    assert mflix.op.name == "mongodb_sample_mflix" and analytics.op.name == "mongodb_sample_analytics"
    assert mflix.can_subset and analytics.can_subset
    assert {k.to_user_string() for k in mflix.keys} == {
        "raw_sample_mflix/comments", "raw_sample_mflix/movies", "raw_sample_mflix/theaters", "raw_sample_mflix/users"
    }
    assert {k.to_user_string() for k in analytics.keys} == {
        "analytics/raw/accounts", "analytics/raw/transactions", "analytics/raw/customers"
    }
    spec = next(s for s in analytics.specs if s.key.path[-1] == "transactions")
    assert spec.group_name == "sample_analytics"
    assert spec.kinds == {"mongodb", "duckdb"}
    assert spec.metadata["dagster/table_name"] == "analytics_raw.transactions"
    assert "incremental on `date`" in (spec.description or "")
    customers = next(s for s in analytics.specs if s.key.path[-1] == "customers")
    assert customers.tags["pii"] == "true"
    assert analytics.op.tags[DESTINATION_TAG] == "duckdb"
    assert analytics.op.pool == "mongodb_dlt_duckdb"


def test_every_collection_has_its_checks_subset_with_it(config: ProjectConfig) -> None:
    mflix, analytics = dlt_asset_factory(config)
    assert {(k.asset_key.path[-1], k.name) for k in analytics.check_keys} == {
        (c, check) for c in ("accounts", "transactions", "customers") for check in (ROWS_MATCH_SOURCE, NO_TYPE_DRIFT)
    }
    specs = {(s.asset_key.path[-1], s.name): s for s in analytics.check_specs}
    assert "between its counts just before and just after the read" in specs["accounts", ROWS_MATCH_SOURCE].description
    assert "the rows it added to `analytics_raw.transactions`" in specs["transactions", ROWS_MATCH_SOURCE].description
    assert len(mflix.check_keys) == 8


def test_selecting_one_collection_loads_only_it(config: ProjectConfig) -> None:
    result = materialize(config, ["raw_sample_mflix/movies"])
    assert result.success
    assert CALLS == [("sample_mflix", "movies")] and COUNTED == ["movies"]
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == dg.AssetKey(["raw_sample_mflix", "movies"])
    assert event.materialization.metadata["rows_loaded"].value == len("movies")
    assert {(e.asset_key.path[-1], e.check_name) for e in result.get_asset_check_evaluations()} == {
        ("movies", ROWS_MATCH_SOURCE), ("movies", NO_TYPE_DRIFT)
    }


def test_a_check_selected_alone_loads_nothing_and_fails_saying_why(config: ProjectConfig) -> None:
    movies = dg.AssetKey(["raw_sample_mflix", "movies"])
    with dg.instance_for_test() as instance:
        result = materialize(config, dg.AssetSelection.checks(dg.AssetCheckKey(movies, NO_TYPE_DRIFT)), instance)
        assert not result.success and CALLS == []
        assert result.get_asset_check_evaluations() == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "materialize raw_sample_mflix/movies to run its checks" in failure.step_failure_data.error.message


def test_rows_are_counted_only_when_their_check_is_selected(config: ProjectConfig) -> None:
    movies = dg.AssetKey(["raw_sample_mflix", "movies"])
    result = materialize(
        config, dg.AssetSelection.assets(movies).without_checks() | dg.AssetSelection.checks(
            dg.AssetCheckKey(movies, NO_TYPE_DRIFT)
        )
    )
    assert result.success and CALLS == [("sample_mflix", "movies")] and COUNTED == []
    assert [e.check_name for e in result.get_asset_check_evaluations()] == [NO_TYPE_DRIFT]


def test_collections_of_a_database_load_in_parallel_up_to_the_limit(config: ProjectConfig) -> None:
    assert materialize(config, dg.AssetSelection.groups("sample_analytics")).success
    assert sorted(CALLS) == [("sample_analytics", c) for c in ("accounts", "customers", "transactions")]
    assert CONCURRENCY["peak"] == 2


def test_a_failing_collection_fails_the_step_after_its_siblings_materialize(config: ProjectConfig) -> None:
    FAILING.update({"movies", "users"})
    result = materialize(config)
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_sample_mflix/comments", "raw_sample_mflix/theaters", "analytics/raw/accounts",
                            "analytics/raw/transactions", "analytics/raw/customers"}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "2 of 4 collection(s) of sample_mflix failed" in message
    assert "movies: OperationFailure: boom in movies" in message and "users: OperationFailure" in message


def test_definitions_jobs_schedules_and_single_writer_executor(config: ProjectConfig) -> None:
    defs = build_definitions(config)
    schedule = defs.resolve_schedule_def("mongodb_sample_analytics_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    job = defs.resolve_job_def("mongodb_sample_analytics_job")
    assert job.asset_layer.selected_asset_keys == {
        dg.AssetKey(["analytics", "raw", c]) for c in ("accounts", "transactions", "customers")
    }
    assert len(defs.resolve_job_def(ALL_COLLECTIONS_JOB).asset_layer.selected_asset_keys) == 7
    assert job.tags["dagster/retry_strategy"] == "FROM_ASSET_FAILURE"
    executor = defs.resolve_job_def(ALL_COLLECTIONS_JOB).executor_def
    resolved = executor.config_schema.resolve_config({}).value["config"]
    assert resolved["tag_concurrency_limits"] == [{"key": DESTINATION_TAG, "value": "duckdb", "limit": 1}]


def test_warehouses_without_a_single_writer_limit_load_databases_in_parallel(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text("destination: {type: bigquery, location: EU}\ndatabases:\n  a: [x]\n  b: [y]\n")
    defs = build_definitions(load_config(path))
    assets = dlt_asset_factory(load_config(path))
    assert all(a.op.pool is None and DESTINATION_TAG not in a.op.tags for a in assets)
    assert {spec.kinds == {"mongodb", "bigquery"} for a in assets for spec in a.specs} == {True}
    assert defs.resolve_job_def(ALL_COLLECTIONS_JOB).executor_def is dg.multiprocess_executor


def test_each_asset_points_at_its_yaml_entry_and_can_carry_a_freshness_policy(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(YAML.replace("customers: {tags: {pii: \"true\"}}", "customers: {freshness: {max_lag: 2h}}"))
    mflix, analytics = dlt_asset_factory(load_config(path))
    lines = path.read_text().splitlines()
    for assets_def in (mflix, analytics):
        for spec in assets_def.specs:
            [reference] = spec.metadata["dagster/code_references"].code_references
            assert reference.file_path == str(path)
            # the line of the collection's own entry: its key, or its item in the shortest form's list
            assert spec.key.path[-1] in lines[reference.line_number - 1]
    freshness = {spec.key.path[-1]: spec.freshness_policy for spec in analytics.specs}
    assert freshness["accounts"] is None
    customers = freshness["customers"]
    assert customers is not None and customers.fail_window.to_timedelta() == timedelta(hours=2)


def big_yaml(databases: int, collections: int) -> str:
    """Like benchmarks/definitions_load.py's YAML, with every kind of collection the specs and checks tell apart."""
    lines = ["defaults:", "  connection_url: ${MONGODB_URI}", "databases:"]
    options = [
        "{}",
        "{incremental: {cursor_field: updated_at}, write_disposition: append}",
        "{write_disposition: replace, limit: 100, freshness: {max_lag: 2h, warn_after: 1h}}",
        "{tags: {pii: 'true'}, description: Described}",
    ]
    for d in range(databases):
        lines += [f"  db_{d}:", "    collections:"]
        lines += [f"      coll_{c}: {options[c % len(options)]}" for c in range(collections)]
    return "\n".join(lines) + "\n"


def test_a_big_yaml_keeps_both_checks_and_the_whole_spec_on_every_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    path = tmp_path / "databases.yaml"
    path.write_text(big_yaml(4, 25))
    config = load_config(path)
    defs = build_definitions(config)
    lines = path.read_text().splitlines()
    assert len(defs.assets) == 4
    for database, assets_def in zip(config.databases.values(), defs.assets, strict=True):
        assert assets_def.can_subset and assets_def.op.pool == "mongodb_dlt_duckdb"
        assert assets_def.op.tags[DESTINATION_TAG] == "duckdb"
        # the checks are the multi-asset's own: declared on it, two per collection, described
        assert assets_def.check_keys == {
            dg.AssetCheckKey(key, name) for key in assets_def.keys for name in (ROWS_MATCH_SOURCE, NO_TYPE_DRIFT)
        }
        assert all(spec.description for spec in assets_def.check_specs)
        for spec, collection in zip(assets_def.specs, database.collections.values(), strict=True):
            assert spec.key == dg.AssetKey([f"raw_{database.name}", collection.name])
            assert spec.group_name == database.name and spec.kinds == {"mongodb", "duckdb"}
            assert spec.description
            assert spec.metadata["dagster/table_name"] == f"mongo_{database.name}.{collection.name}"
            assert spec.metadata["mongodb/database"] == database.name
            assert spec.metadata["mongodb/collection"] == collection.name
            assert spec.metadata["write_disposition"] == collection.write_disposition
            [reference] = spec.metadata["dagster/code_references"].code_references
            assert reference.file_path == str(path)
            assert lines[reference.line_number - 1].strip().startswith(f"{collection.name}:")
            assert spec.tags.get("pii") == collection.tags.get("pii")
            assert (spec.freshness_policy is None) == (collection.freshness is None)
    asset_graph = defs.get_repository_def().asset_graph
    assert len(asset_graph.asset_check_keys) == 2 * len(asset_graph.get_all_asset_keys()) == 200


def test_building_leaves_the_garbage_collector_as_it_was(config: ProjectConfig) -> None:
    # the factory pauses the collector while it builds (see factory.long_lived)
    assert gc.isenabled()
    dlt_asset_factory(config)
    assert gc.isenabled()
    gc.disable()
    try:
        dlt_asset_factory(config)
        assert not gc.isenabled()
    finally:
        gc.enable()
    # objects someone froze stay frozen (unfreezing them would empty the permanent generation)
    gc.freeze()
    try:
        dlt_asset_factory(config)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_specs_and_check_descriptions_name_the_table_as_the_warehouse_stores_it(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text("databases:\n  Shop:\n    collections:\n      orderItems: {}\n")
    (shop,) = dlt_asset_factory(load_config(path))
    (spec,) = shop.specs
    assert spec.metadata["dagster/table_name"] == "mongo_shop.order_items"
    rows_check = next(check for check in shop.check_specs if check.name == ROWS_MATCH_SOURCE)
    assert "`mongo_shop.order_items` holds as many documents" in (rows_check.description or "")
