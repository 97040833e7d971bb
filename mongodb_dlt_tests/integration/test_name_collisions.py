"""Names that used to lose or duplicate rows, through the MongoDB stand-in and DuckDB: two collections that dlt
loaded into one table are refused before anything is read (and load apart once the YAML moves one), and a
database whose dataset name dlt folds (``Shop``) merges instead of appending every run."""

from __future__ import annotations

import dagster as dg
import pytest

from mongodb_dlt.config import ConfigError, ProjectConfig, load_config
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.factory import LOADER_RESOURCE_KEY, dlt_asset_factory
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project

TWO_COLLECTIONS_ONE_TABLE = """\
defaults:
  retries: {max_attempts: 1}
destination:
  type: duckdb
  path: {duckdb}
databases:
  shop:
    collections:
      orderItems: {}
      order_items: {}
"""


def materialize(project: Project, config: ProjectConfig) -> dg.ExecuteInProcessResult:
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    return dg.materialize(dlt_asset_factory(config), resources={LOADER_RESOURCE_KEY: loader}, raise_on_error=False)


def test_two_collections_of_one_table_are_refused_before_anything_is_read(
    project: Project, standin: MongoStandIn
) -> None:
    # on main both loaded into shop.order_items: 3 rows for 6 documents, and both checks passed
    standin.client.shop.orderItems.insert_many([{"_id": i, "from": "orderItems"} for i in range(3)])
    standin.client.shop.order_items.insert_many([{"_id": i, "from": "order_items"} for i in range(3)])
    standin.clear_commands()
    path = project.write_config(TWO_COLLECTIONS_ONE_TABLE)
    with pytest.raises(ConfigError) as info:
        build_definitions(load_config(path))
    assert (info.value.line, info.value.key) == (10, "databases.shop.collections.order_items")
    assert "table mongo_shop.order_items" in info.value.problem
    assert f"The other is at {path}, line 9, key databases.shop.collections.orderItems" in info.value.problem
    assert standin.commands_seen("shop") == []
    assert not project.duckdb_path.exists()

    # the fix the message names: each collection then loads into a table of its own, every document once
    config = load_config(
        project.write_config(
            TWO_COLLECTIONS_ONE_TABLE.replace("order_items: {}", "order_items: {asset_name: order_items_snake}")
        )
    )
    result = materialize(project, config)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert project.query("select \"from\", count(*) from mongo_shop.order_items group by 1") == [("orderItems", 3)]
    assert project.query("select \"from\", count(*) from mongo_shop.order_items_snake group by 1") == [
        ("order_items", 3)
    ]


def test_a_database_whose_dataset_dlt_folds_merges_on_every_run(project: Project, standin: MongoStandIn) -> None:
    # on main, dataset mongo_Shop was looked for as such in DuckDB's catalog (dlt stores it as mongo_shop): every
    # run found no table, took itself for a first load and appended, so 5 documents were 10 rows after two runs
    standin.client.Shop.orders.insert_many([{"_id": i, "n": i} for i in range(5)])
    config = load_config(project.write_config(TWO_COLLECTIONS_ONE_TABLE.split("  shop:")[0] + "  Shop: [orders]\n"))
    for _ in range(2):
        result = materialize(project, config)
        assert result.success
    assert project.scalar("select count(*) from mongo_shop.orders") == 5
    # every name of ours is the stored one: the materialization's table is the one that holds the rows
    assert config.databases["Shop"].dataset == "mongo_shop"
