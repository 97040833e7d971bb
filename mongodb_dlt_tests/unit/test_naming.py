"""naming.py: the default names, and a translator subclass (README's snippet, run as printed) naming assets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from mongodb_dlt import naming
from mongodb_dlt.config import load_config
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt_tests.readme import README, python_snippet


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "databases.yaml").write_text(
        textwrap.dedent(
            """
            databases:
              shop:
                collections:
                  orders: {}
                  order-lines: {description: "Lines of every order"}
              crm: [customers]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_names_follow_the_yaml(project: Path) -> None:
    defs = build_definitions(load_config("config/databases.yaml"))
    graph = defs.get_repository_def().asset_graph
    assert set(graph.get_all_asset_keys()) == {
        dg.AssetKey(["raw_shop", "orders"]),
        dg.AssetKey(["raw_shop", "order_lines"]),
        dg.AssetKey(["raw_crm", "customers"]),
    }
    lines = graph.get(dg.AssetKey(["raw_shop", "order_lines"]))
    assert lines.group_name == "shop"
    assert lines.description == "Lines of every order"
    orders = graph.get(dg.AssetKey(["raw_shop", "orders"]))
    assert orders.description == (
        "MongoDB collection `shop.orders` loaded by dlt into `mongo_shop.orders` (merge)."
    )
    assert {job.name for job in defs.get_repository_def().get_all_jobs()} >= {naming.ALL_COLLECTIONS_JOB}
    assert naming.pipeline_name("shop", "order-lines") == "mongodb_dlt__shop__order_lines"
    assert naming.op_name("my-db") == "mongodb_my_db"
    assert naming.default_dataset("", "shop") == "shop"
    assert naming.root_table("OrderLines") == "order_lines"
    # the loader recognises its own schemas in dlt's log lines by this prefix
    assert naming.schema_name(naming.pipeline_name("shop", "order-lines")) == "mongodb_dlt_shop_order_lines"
    assert naming.schema_name(naming.pipeline_name("Shop", "x")).startswith(naming.SCHEMA_PREFIX)


def test_the_readme_translator_names_keys_groups_and_deps(project: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_snippet("Naming assets your way"), str(README), "exec"), namespace)
    defs = namespace["defs"]
    assert isinstance(defs, dg.Definitions)
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    orders = dg.AssetKey(["bronze", "shop", "orders"])
    assert orders in graph.get_all_asset_keys()
    assert dg.AssetKey(["bronze", "crm", "customers"]) in graph.get_all_asset_keys()
    assert not [key for key in graph.get_all_asset_keys() if key.path[0].startswith("raw_")]
    node = graph.get(orders)
    assert node.group_name == "bronze"
    assert dg.AssetKey(["app", "shop"]) in node.parent_keys
    # checks and the warehouse follow the asset, whatever its name
    assert {check.name for check in graph.get_check_keys_for_assets({orders})} == {
        "rows_match_source",
        "no_type_drift",
    }
    assert node.metadata["dagster/table_name"] == "mongo_shop.orders"


def test_a_component_subclass_names_its_assets_with_its_translator(project: Path) -> None:
    from mongodb_dlt.component import MongoDltComponent

    namespace: dict[str, object] = {}
    exec(compile(python_snippet("Naming assets your way"), str(README), "exec"), namespace)
    bronze = namespace["BronzeTranslator"]

    class BronzeMongo(MongoDltComponent):
        def get_translator(self) -> naming.MongoDltTranslator:
            return bronze()  # type: ignore[operator]

    component = BronzeMongo(config_path=str(project / "config" / "databases.yaml"))
    graph = dg.component_defs(component=component).get_repository_def().asset_graph
    assert dg.AssetKey(["bronze", "shop", "orders"]) in graph.get_all_asset_keys()
    assert graph.get(dg.AssetKey(["bronze", "crm", "customers"])).group_name == "bronze"
    plain = dg.component_defs(component=MongoDltComponent(config_path=str(project / "config" / "databases.yaml")))
    assert dg.AssetKey(["raw_crm", "customers"]) in plain.get_repository_def().asset_graph.get_all_asset_keys()
