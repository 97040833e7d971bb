"""Names that cannot collide: every case where two collections or databases would land in one place (asset key,
op, dlt pipeline and schema, dataset, table, child table, dlt's own tables) is refused when the YAML loads, with the
file, line and key of both and the YAML option that moves one; a translator that names two assets alike is refused
when the definitions load; ``mongodb-dlt validate`` prints the names as the warehouse stores them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from mongodb_dlt import naming
from mongodb_dlt.cli import main
from mongodb_dlt.config import CollectionConfig, ConfigError, DatabaseConfig, load_config
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.factory import dlt_asset_factory


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# (YAML, where the problem is reported: line and key, where the other holder is: line and key, message fragments)
COLLISIONS = {
    "two collections whose names differ in case": (
        """
        databases:
          db: [Orders, orders]
        """,
        (2, "databases.db[1]"),
        (2, "databases.db[0]"),
        ("table mongo_db.orders", "dlt schema mongodb_dlt_db_orders", "set `asset_name` on one of them"),
    ),
    "camelCase and snake_case": (
        """
        databases:
          db:
            collections:
              orderItems: {}
              order_items: {}
        """,
        (5, "databases.db.collections.order_items"),
        (4, "databases.db.collections.orderItems"),
        ("table mongo_db.order_items", "set `asset_name` on one of them"),
    ),
    "a table_name that dlt folds onto another table": (
        """
        databases:
          db:
            collections:
              a: {table_name: Sales}
              b: {table_name: sales}
        """,
        (5, "databases.db.collections.b"),
        (4, "databases.db.collections.a"),
        ("table mongo_db.sales", "set `table_name` on one of them"),
    ),
    "a collection named like another's child table": (
        """
        databases:
          db: [t, t__a]
        """,
        (2, "databases.db[1]"),
        (2, "databases.db[0]"),
        ("table mongo_db.t__a", "child table of an array field `a`", "set `table_name` on one of them"),
    ),
    "a collection whose child tables are named like another's table": (
        """
        databases:
          db:
            collections:
              events: {table_name: log__events}
              log: {}
        """,
        (5, "databases.db.collections.log"),
        (4, "databases.db.collections.events"),
        ("table mongo_db.log__events", "child table of an array field `events`", "`table_name`"),
    ),
    "two collections whose names become one asset name": (
        """
        databases:
          db: [a-b, a_b]
        """,
        (2, "databases.db[1]"),
        (2, "databases.db[0]"),
        ("asset key raw_db/a_b", "dlt pipeline mongodb_dlt__db__a_b", "set `asset_name` on one of them"),
    ),
    "a table_name that moves the table but not the dlt schema": (
        """
        databases:
          db:
            collections:
              Orders: {}
              orders: {table_name: orders_lc}
        """,
        (5, "databases.db.collections.orders"),
        (4, "databases.db.collections.Orders"),
        ("dlt schema mongodb_dlt_db_orders in dataset mongo_db", "set `asset_name` on one of them"),
    ),
    "two databases whose names differ in case": (
        """
        databases:
          Shop: [orders]
          shop: [orders]
        """,
        (3, "databases.shop[0]"),
        (2, "databases.Shop[0]"),
        ("table mongo_shop.orders", "of database 'Shop'", "set `dataset` on one of the databases"),
    ),
    "two databases given one dataset": (
        """
        databases:
          a:
            dataset: Shared
            collections: [users]
          b:
            dataset: shared
            collections: [users]
        """,
        (7, "databases.b.collections[0]"),
        (4, "databases.a.collections[0]"),
        ("table shared.users", "set `dataset` on one of the databases"),
    ),
    "two databases given one key_prefix": (
        """
        databases:
          a:
            key_prefix: raw
            collections: [users]
          b:
            key_prefix: raw
            dataset: other
            collections: [users]
        """,
        (8, "databases.b.collections[0]"),
        (4, "databases.a.collections[0]"),
        ("asset key raw/users", "give the databases different `key_prefix` values"),
    ),
    "database and collection names whose pipelines meet at __": (
        """
        databases:
          a__b:
            dataset: one
            collections: [c]
          a:
            dataset: two
            collections: [b__c]
        """,
        (7, "databases.a.collections[0]"),
        (4, "databases.a__b.collections[0]"),
        ("dlt pipeline mongodb_dlt__a__b__c", "set `asset_name` on one of the collections"),
    ),
    "two databases whose names become one op": (
        """
        databases:
          my-db: [a]
          my_db: [b]
        """,
        (3, "databases.my_db"),
        (2, "databases.my-db"),
        ("op mongodb_my_db", "mongodb_my_db_job", "mongodb_my_db_schedule", "set `op_name` on one of them"),
    ),
    "an op_name that another database has": (
        """
        databases:
          sales: [a]
          crm:
            op_name: mongodb_sales
            collections: [b]
        """,
        (4, "databases.crm.op_name"),
        (2, "databases.sales"),
        ("op mongodb_sales", "set `op_name` on one of them"),
    ),
    "a database whose dataset is another's staging dataset": (
        """
        databases:
          shop: [orders]
          shop_staging: [returns]
        """,
        (3, "databases.shop_staging"),
        (2, "databases.shop"),
        ("dataset mongo_shop_staging", "to stage its merge loads", "set `dataset` on one of them"),
    ),
    "a dataset given as the staging dataset of one seen later": (
        """
        databases:
          a:
            dataset: Raw_Staging
            collections: [x]
          b:
            dataset: raw
            collections: [y]
        """,
        (6, "databases.b.dataset"),
        (3, "databases.a.dataset"),
        ("dataset raw_staging", "database 'a' as its own", "set `dataset` on one of them"),
    ),
}


@pytest.mark.parametrize(("body", "here", "there", "fragments"), COLLISIONS.values(), ids=list(COLLISIONS))
def test_two_holders_of_one_place_are_refused_naming_both(
    tmp_path: Path,
    body: str,
    here: tuple[int, str],
    there: tuple[int, str],
    fragments: tuple[str, ...],
) -> None:
    path = write(tmp_path, body)
    error = refused(path)
    assert len(error.errors) == 1, str(error)
    assert (error.path, error.line, error.key) == (path, *here), str(error)
    assert str(error).startswith(f"{path}, line {here[0]}, key {here[1]}: ")
    assert f"The other is at {path}, line {there[0]}, key {there[1]}" in error.problem
    for fragment in fragments:
        assert fragment in error.problem, error.problem


@pytest.mark.parametrize(
    ("entry", "line", "key", "table"),
    [
        ("db: [_dlt_loads]", 2, "databases.db[0]", "_dlt_loads"),
        ("db: {collections: {x: {table_name: _DLT_version}}}", 2, "databases.db.collections.x", "_dlt_version"),
        ("db: {collections: {x: {table_name: _dlt_mine}}}", 2, "databases.db.collections.x", "_dlt_mine"),
    ],
)
def test_dlt_table_names_are_reserved(tmp_path: Path, entry: str, line: int, key: str, table: str) -> None:
    path = write(tmp_path, f"databases:\n  {entry}\n")
    error = refused(path)
    assert (error.line, error.key) == (line, key)
    assert f"table {table} starts with _dlt, which dlt reserves" in error.problem
    assert "set `table_name` to another name" in error.problem


@pytest.mark.parametrize(
    ("destination", "database", "line", "key", "dataset"),
    [
        ("data/bench.duckdb", "db: {dataset: bench, collections: [x]}", 3, "databases.db", "bench"),
        ("w/Shop.duckdb", "shop: {dataset: shop, collections: [x]}", 3, "databases.shop", "shop"),
        ("mongo_db.duckdb", "db: [x]", 3, "databases.db", "mongo_db"),
        ("x/lake_staging.duckdb", "db: {dataset: lake, collections: [x]}", 3, "databases.db", "lake_staging"),
    ],
    ids=["dataset", "any case", "default dataset", "staging dataset"],
)
def test_a_dataset_named_like_the_duckdb_file_is_refused(
    tmp_path: Path, destination: str, database: str, line: int, key: str, dataset: str
) -> None:
    """DuckDB names the file's catalog after it: a dataset of that name makes every name in it ambiguous (seen:
    `Binder Error: Ambiguous reference to catalog or schema "bench"` on every load)."""
    body = f"destination: {{type: duckdb, path: {destination}}}\ndatabases:\n  {database}\n"
    error = refused(write(tmp_path, body))
    assert (error.line, error.key) == (line, key)
    assert f"dataset {dataset} has the name DuckDB gives the file" in error.problem
    assert "set `dataset` on the database, or name the DuckDB file otherwise" in error.problem
    assert load_config(write(tmp_path, body.replace(".duckdb", "_warehouse.duckdb"))).databases


def test_the_fixes_the_messages_name_give_every_collection_places_of_its_own(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          my-db: [customers, t]
          my_db:
            op_name: mongodb_my_db_eu
            collections:
              Orders: {}
              orders: {asset_name: orders_lower}
              a-b: {}
              a_b: {asset_name: a_b_snake}
              t__a: {table_name: t_a}
          Shop: [orders]
          shop:
            dataset: mongo_shop_eu
            collections: [orders]
        """,
    )
    config = load_config(path)
    dbs = config.databases
    assert [db.op_name for db in dbs.values()] == ["mongodb_my_db", "mongodb_my_db_eu", "mongodb_Shop", "mongodb_shop"]
    assert [db.dataset for db in dbs.values()] == ["mongo_my_db", "mongo_my_db", "mongo_shop", "mongo_shop_eu"]
    eu = dbs["my_db"].collections
    # asset_name moves the asset, the pipeline and, with no table_name, the table
    assert (eu["orders"].asset_name, eu["orders"].table_name) == ("orders_lower", "orders_lower")
    assert naming.pipeline_name("my_db", eu["orders"].asset_name) == "mongodb_dlt__my_db__orders_lower"
    assert (eu["a_b"].asset_name, eu["a_b"].table_name) == ("a_b_snake", "a_b_snake")
    # two databases may share a dataset (here by default: dlt folds my-db and my_db alike) when their tables differ
    tables = {
        (db.dataset, naming.root_table(c.table_name)) for db in dbs.values() for c in db.collections.values()
    }
    assert len(tables) == sum(len(db.collections) for db in dbs.values())


def test_names_that_do_not_collide_keep_their_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          my-db:
            schedule: "0 * * * *"
            collections: [orderItems, order.lines, "2021"]
        """,
    )
    database = load_config(path).databases["my-db"]
    assert (database.op_name, database.key_prefix) == ("mongodb_my_db", ("raw_my-db",))
    # the dataset as the warehouse has always stored it (dlt folded `mongo_my-db` to it before too)
    assert database.dataset == "mongo_my_db"
    items, lines, year = database.collections.values()
    assert [c.asset_name for c in (items, lines, year)] == ["orderItems", "order_lines", "2021"]
    # table_name stays as given (it names the dlt resource, whose state holds the incremental cursor)
    assert [c.table_name for c in (items, lines, year)] == ["orderItems", "order_lines", "2021"]
    assert [naming.root_table(c.table_name) for c in (items, lines, year)] == ["order_items", "order_lines", "_2021"]
    assert naming.pipeline_name("my-db", items.asset_name) == "mongodb_dlt__my-db__orderItems"
    assert naming.database_job_name(database.op_name) == "mongodb_my_db_job"


def test_a_dataset_given_in_code_is_kept_as_stored() -> None:
    database = DatabaseConfig(name="Shop", dataset="Sales-EU", collections={})
    assert (database.dataset, database.op_name) == ("sales_eu", "mongodb_Shop")
    assert DatabaseConfig(name="Shop", collections={}).dataset == "mongo_shop"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("databases:\n  sales:\n    op_name: mongodb-sales\n    collections: [orders]\n", "databases.sales.op_name"),
        (
            "databases:\n  sales:\n    collections:\n      orders: {asset_name: my orders}\n",
            "databases.sales.collections.orders.asset_name",
        ),
    ],
)
def test_dagster_names_in_the_yaml_must_be_dagster_names(tmp_path: Path, body: str, key: str) -> None:
    error = refused(write(tmp_path, body))
    assert error.key == key, str(error)
    assert "[A-Za-z0-9_]" in error.problem, error.problem


class _ByCollection(naming.MongoDltTranslator):
    """Drops the database from the key: two databases' `users` then share one."""

    def asset_key(self, database: DatabaseConfig, collection: CollectionConfig) -> tuple[str, ...]:
        return ("mongo", collection.name.replace("x", "-"))


def test_a_translator_giving_two_collections_one_asset_key_fails_the_definitions(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  a: [users]\n  b:\n    - users\n")
    with pytest.raises(dg.DagsterInvalidDefinitionError) as info:
        build_definitions(load_config(path), translator=_ByCollection())
    message = str(info.value)
    assert f"a.users ({path}, line 2) and b.users ({path}, line 4)" in message
    assert "asset key mongo/users" in message and "_ByCollection" in message


def test_a_translator_giving_two_collections_one_output_name_fails_the_definitions(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  a: [a_b, axb]\n")
    with pytest.raises(dg.DagsterInvalidDefinitionError) as info:
        dlt_asset_factory(load_config(path), translator=_ByCollection())
    message = str(info.value)
    assert f"a.a_b ({path}, line 2) and a.axb ({path}, line 2)" in message
    assert "mongo/a_b and mongo/a-b, one output name mongo__a_b" in message


# -- mongodb-dlt validate ---------------------------------------------------------------------------------------


def test_validate_prints_the_names_the_load_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """
        databases:
          Shop:
            schedule: "0 * * * *"
            collections:
              orderItems: {}
              Customers: {table_name: CRM-Customers}
          my-db:
            op_name: mongodb_mine
            dataset: My-Data
            collections: ["2021"]
        """,
    )
    assert main(["validate", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "database Shop: op mongodb_Shop, dataset mongo_shop, connection ${MONGODB_URI}, 4 in parallel, "
        "schedule mongodb_Shop_schedule of job mongodb_Shop_job (0 * * * *)"
    ) in out
    assert "database my-db: op mongodb_mine, dataset my_data," in out and "no schedule" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.startswith(("order", "Cus", "20"))}
    assert rows == {
        "orderItems": ["raw_Shop/orderItems", "mongo_shop.order_items"],
        "Customers": ["raw_Shop/Customers", "mongo_shop.crm_customers"],
        "2021": ["raw_my-db/2021", "my_data._2021"],
    }


def test_validate_names_both_collections_of_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "databases:\n  shop:\n    - orderItems\n    - order_items\n")
    assert main(["validate", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {path}, line 4, key databases.shop[1]: collection 'order_items' and ")
    assert f"The other is at {path}, line 3, key databases.shop[0]" in captured.err
