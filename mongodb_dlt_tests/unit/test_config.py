"""config/: both YAML forms, inheritance, defaults, env interpolation, masking, every error's location."""

from __future__ import annotations

import datetime as dt
import pickle
import re
import textwrap
import time
from pathlib import Path

import pytest
from bson import Decimal128, Int64, ObjectId, Timestamp

from mongodb_dlt.config import (
    CollectionConfig,
    CollectionOptions,
    ConfigError,
    DatabaseConfig,
    DestinationConfig,
    IncrementalConfig,
    ProjectConfig,
    RetryConfig,
    config_path,
    load_config,
    mask_secrets,
    mask_url,
    resolve_connection_url,
    resolve_env,
)
from mongodb_dlt.config.models import DefaultsSection, default_of

REPO = Path(__file__).resolve().parents[2]
UTC = dt.UTC


def write(tmp_path: Path, body: str, name: str = "databases.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    # Translated, never chained: no pydantic or PyYAML traceback reaches the user.
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    assert "errors.pydantic.dev" not in str(error)
    assert "validation error" not in str(error)
    return error


def problem_at(error: ConfigError, key: str) -> ConfigError:
    found = [e for e in error.errors if e.key == key]
    assert found, f"no problem at {key}; got:\n{error}"
    return found[0]


def assert_problem(error: ConfigError, path: Path, line: int, key: str, *fragments: str) -> ConfigError:
    found = problem_at(error, key)
    assert found.path == path
    assert found.line == line, str(found)
    text = str(found)
    assert text.startswith(f"{path}, line {line}, key {key}: "), text
    for fragment in fragments:
        assert fragment in found.problem, found.problem
    return found


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MONGODB_URI", "ANALYTICS_MONGODB_URI", "MONGODB_DLT_CONFIG", "CFG_TEST_VAR", "CFG_OTHER"):
        monkeypatch.delenv(name, raising=False)


# --- parsing: both forms, inheritance, defaults ------------------------------------------------------------


def test_repository_example_config_loads() -> None:
    config = load_config(REPO / "config" / "databases.yaml")
    assert list(config.databases) == ["sample_mflix", "sample_analytics"]
    mflix = config.databases["sample_mflix"]
    assert list(mflix.collections) == ["comments", "movies", "theaters", "users"]
    assert mflix.dataset == "mongo_sample_mflix"
    assert mflix.key_prefix == ("raw_sample_mflix",)
    assert mflix.connection_url == "${MONGODB_URI}"
    analytics = config.databases["sample_analytics"]
    assert analytics.dataset == "analytics_raw"
    assert analytics.schedule == "0 * * * *"
    assert analytics.connection_url == "${ANALYTICS_MONGODB_URI}"
    transactions = analytics.collections["transactions"]
    assert transactions.write_disposition == "append"
    assert transactions.incremental == IncrementalConfig(
        cursor_field="date", initial_value=dt.datetime(2020, 1, 1, tzinfo=UTC)
    )
    customers = analytics.collections["customers"]
    assert customers.filter == {"active": True}
    assert customers.projection == ("username", "name", "email", "accounts")
    assert customers.write_disposition == "merge"
    assert config.destination.type == "duckdb"
    assert config.destination.path == "data/warehouse.duckdb"


def test_shortest_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          shop: [orders, customers]
        """,
    )
    config = load_config(path)
    shop = config.databases["shop"]
    assert list(shop.collections) == ["orders", "customers"]
    orders = shop.collections["orders"]
    assert (orders.name, orders.database, orders.asset_name, orders.table_name) == (
        "orders",
        "shop",
        "orders",
        "orders",
    )
    assert orders.line == 2
    assert shop.line == 2
    assert config.path == path


def test_full_form_with_mapping_list_and_null_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          shop:
            collections:
              orders:
              customers: {}
              events:
                limit: 5
          crm:
            collections: [leads, deals]
        """,
    )
    config = load_config(path)
    shop = config.databases["shop"]
    assert list(shop.collections) == ["orders", "customers", "events"]
    assert shop.collections["orders"].limit is None
    assert shop.collections["events"].limit == 5
    assert shop.collections["events"].line == 6
    assert list(config.databases["crm"].collections) == ["leads", "deals"]
    assert config.databases["crm"].collections["deals"].line == 9


def test_built_in_defaults_come_from_the_model_fields(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "databases:\n  db: [c]\n"))
    database = config.databases["db"]
    collection = database.collections["c"]
    assert collection.write_disposition == default_of(CollectionOptions, "write_disposition") == "merge"
    assert collection.primary_key == default_of(CollectionOptions, "primary_key") == ("_id",)
    assert collection.filter == {}
    assert collection.projection is None
    assert collection.limit is None
    assert collection.incremental is None
    assert collection.batch_size == default_of(CollectionOptions, "batch_size") == 1000
    assert collection.max_table_nesting == default_of(CollectionOptions, "max_table_nesting") == 2
    assert collection.json_paths == ()
    assert collection.max_object_keys == default_of(CollectionOptions, "max_object_keys") == 64
    assert collection.retries.max_attempts == default_of(RetryConfig, "max_attempts") == 3
    assert collection.retries.backoff_seconds == default_of(RetryConfig, "backoff_seconds") == 2.0
    assert collection.tags == {}
    assert collection.description is None
    assert collection.connection_url == default_of(DefaultsSection, "connection_url") == "${MONGODB_URI}"
    assert collection.connection_url_line is None
    assert database.max_parallel_collections == default_of(DefaultsSection, "max_parallel_collections") == 4
    assert database.dataset == "mongo_db"
    assert database.key_prefix == ("raw_db",)
    assert database.schedule is None
    assert config.dataset_prefix == default_of(ProjectConfig, "dataset_prefix") == "mongo"
    assert config.destination.type == "duckdb"
    assert config.destination.path == default_of(DestinationConfig, "path")
    assert config.destination.loader_file_format is None


def test_inheritance_defaults_then_database_then_collection(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          batch_size: 10
          write_disposition: append
          filter: {kind: a}
          tags: {team: data, tier: bronze}
          max_parallel_collections: 2
          retries: {max_attempts: 5}
        databases:
          plain: [c]
          overridden:
            batch_size: 20
            tags: {tier: silver}
            max_parallel_collections: 8
            collections:
              inherits: {}
              own:
                batch_size: 30
                filter: {other: b}
                tags: {owner: me}
                write_disposition: replace
        """,
    )
    config = load_config(path)
    plain = config.databases["plain"].collections["c"]
    assert plain.batch_size == 10
    assert plain.write_disposition == "append"
    assert plain.filter == {"kind": "a"}
    assert plain.tags == {"team": "data", "tier": "bronze"}
    assert plain.retries.max_attempts == 5
    assert config.databases["plain"].max_parallel_collections == 2

    overridden = config.databases["overridden"]
    assert overridden.max_parallel_collections == 8
    inherits = overridden.collections["inherits"]
    assert inherits.batch_size == 20
    assert inherits.tags == {"team": "data", "tier": "silver"}
    assert inherits.filter == {"kind": "a"}
    own = overridden.collections["own"]
    assert own.batch_size == 30
    assert own.write_disposition == "replace"
    # A value replaces the inherited one (no deep merge) except tags, which merge.
    assert own.filter == {"other": "b"}
    assert own.tags == {"team": "data", "tier": "silver", "owner": "me"}


def test_explicit_null_cancels_an_inherited_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          incremental: {cursor_field: updated_at}
          limit: 100
          write_disposition: append
        databases:
          db:
            collections:
              full:
                incremental: null
                limit: null
              partial: {}
        """,
    )
    collections = load_config(path).databases["db"].collections
    assert collections["full"].incremental is None
    assert collections["full"].limit is None
    assert collections["partial"].incremental == IncrementalConfig(cursor_field="updated_at")
    assert collections["partial"].limit == 100


def test_dataset_prefix_and_key_prefix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        dataset_prefix: ""
        databases:
          a: [x]
          b:
            key_prefix: lake/mongo
            dataset: custom
            collections: [x]
          c:
            key_prefix: [one, two]
            collections: [x]
        """,
    )
    config = load_config(path)
    assert config.databases["a"].dataset == "a"
    assert config.databases["a"].key_prefix == ("raw_a",)
    assert config.databases["b"].dataset == "custom"
    assert config.databases["b"].key_prefix == ("lake", "mongo")
    assert config.databases["c"].key_prefix == ("one", "two")
    other = load_config(write(tmp_path, "dataset_prefix: wh\ndatabases:\n  a: [x]\n", "other.yaml"))
    assert other.databases["a"].dataset == "wh_a"


def test_asset_name_and_table_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              "orders.v2-eu": {}
              "2021": {table_name: year_2021}
              on: {}
        """,
    )
    collections = load_config(path).databases["db"].collections
    assert list(collections) == ["orders.v2-eu", "2021", "on"]
    assert collections["orders.v2-eu"].asset_name == "orders_v2_eu"
    assert collections["orders.v2-eu"].table_name == "orders_v2_eu"
    assert collections["2021"].asset_name == "2021"
    assert collections["2021"].table_name == "year_2021"


def test_names_in_list_form_keep_their_text(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "databases:\n  db: [2021, on, null_ish]\n"))
    assert list(config.databases["db"].collections) == ["2021", "on", "null_ish"]


def test_option_shapes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          write_disposition: append
        databases:
          db:
            collections:
              a:
                primary_key: [tenant, id]
                json_paths: attributes
                projection: {password: 0}
                description: Orders placed online
              b:
                primary_key: id
                json_paths: [a.b, c]
                projection: name
              c:
                primary_key: null
        """,
    )
    collections = load_config(path).databases["db"].collections
    assert collections["a"].primary_key == ("tenant", "id")
    assert collections["a"].json_paths == ("attributes",)
    assert collections["a"].projection == {"password": 0}
    assert collections["a"].description == "Orders placed online"
    assert collections["b"].primary_key == ("id",)
    assert collections["b"].json_paths == ("a.b", "c")
    assert collections["b"].projection == ("name",)
    assert collections["c"].primary_key == ()


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              a: &fast {batch_size: 5, limit: 7}
              b:
                <<: *fast
                limit: 3
        """,
    )
    collections = load_config(path).databases["db"].collections
    assert (collections["a"].batch_size, collections["a"].limit) == (5, 7)
    assert (collections["b"].batch_size, collections["b"].limit) == (5, 3)


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ('"2020-01-01T00:00:00Z"', dt.datetime(2020, 1, 1, tzinfo=UTC)),
        (
            '"2020-01-01T02:00:00+02:00"',
            dt.datetime(2020, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        ),
        ('"2020-01-01 12:30"', dt.datetime(2020, 1, 1, 12, 30, tzinfo=UTC)),
        ("2020-01-01T00:00:00Z", dt.datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01 05:00:00", dt.datetime(2020, 1, 1, 5, tzinfo=UTC)),
        ("2020-01-01", dt.datetime(2020, 1, 1, tzinfo=UTC)),
        ('"2020-01-01"', "2020-01-01"),
        ('"abc"', "abc"),
        ("42", 42),
        ("1.5", 1.5),
        ("true", True),
        ('{$oid: "65f1a2b3c4d5e6f708192a3b"}', ObjectId("65f1a2b3c4d5e6f708192a3b")),
        ('{$numberDecimal: "1.50"}', Decimal128("1.50")),
        ('{$numberLong: "5"}', Int64(5)),
        ("{$timestamp: {t: 1700000000, i: 3}}", Timestamp(1700000000, 3)),
        ('{$date: "2020-01-01T00:00:00Z"}', dt.datetime(2020, 1, 1, tzinfo=UTC)),
    ],
)
def test_incremental_initial_value(tmp_path: Path, yaml_value: str, expected: object) -> None:
    path = write(
        tmp_path,
        f"""
        defaults:
          write_disposition: append
        databases:
          db:
            collections:
              c: {{incremental: {{cursor_field: ts, initial_value: {yaml_value}}}}}
        """,
    )
    value = load_config(path).databases["db"].collections["c"].incremental.initial_value
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, dt.datetime):
        assert value.utcoffset() == expected.utcoffset()


def test_filter_extended_json_becomes_bson_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              c:
                filter:
                  _id: {$gte: {$oid: 5f1d7b9e2c3a4b5d6e7f8a9b}}
                  created: {$lt: {$date: "2021-06-01T00:00:00Z"}}
                  kind: {$in: [a, b]}
                  count: {$gt: {$numberLong: "5"}}
        """,
    )
    query = load_config(path).databases["db"].collections["c"].filter
    assert query["_id"] == {"$gte": ObjectId("5f1d7b9e2c3a4b5d6e7f8a9b")}
    assert query["created"]["$lt"] == dt.datetime(2021, 6, 1, tzinfo=UTC)
    assert query["created"]["$lt"].utcoffset() == dt.timedelta(0)
    assert query["kind"] == {"$in": ["a", "b"]}
    assert query["count"] == {"$gt": 5}


def test_config_path_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() == Path("config/databases.yaml")
    monkeypatch.setenv("MONGODB_DLT_CONFIG", "/elsewhere/x.yaml")
    assert config_path() == Path("/elsewhere/x.yaml")


def test_load_config_without_argument_uses_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "databases:\n  db: [c]\n")
    monkeypatch.setenv("MONGODB_DLT_CONFIG", str(path))
    assert list(load_config().databases) == ["db"]


def test_models_can_be_built_directly() -> None:
    collection = CollectionConfig(name="my-coll", database="db", primary_key="id")
    assert collection.asset_name == "my_coll"
    assert collection.table_name == "my_coll"
    assert collection.primary_key == ("id",)
    database = DatabaseConfig(name="db", collections={"my-coll": collection})
    assert database.dataset == "mongo_db"
    assert database.key_prefix == ("raw_db",)
    with pytest.raises(ValueError, match="would lose data"):
        CollectionConfig(
            name="c", database="db", write_disposition="replace", incremental={"cursor_field": "ts"}
        )


def test_destination_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        destination:
          type: bigquery
          project: my-project
          location: EU
          options: {truncate_tables_on_staging_destination_before_load: false}
        databases:
          db: [c]
        """,
    )
    destination = load_config(path).destination
    assert destination.type == "bigquery"
    assert destination.path is None
    assert destination.project == "my-project"
    assert destination.location == "EU"
    assert destination.options == {"truncate_tables_on_staging_destination_before_load": False}


def test_custom_destination_dotted_path_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "destination: {type: my_package.sinks.warehouse}\ndatabases:\n  db: [c]\n")
    assert load_config(path).destination.type == "my_package.sinks.warehouse"


def test_valid_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, 'databases:\n  db:\n    schedule: "15 3 * * MON-FRI"\n    collections: [c]\n')
    assert load_config(path).databases["db"].schedule == "15 3 * * MON-FRI"


# --- environment interpolation -----------------------------------------------------------------------------


def test_env_interpolation_at_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_TEST_VAR", "/data/wh.duckdb")
    monkeypatch.setenv("CFG_OTHER", "")
    path = write(
        tmp_path,
        """
        destination:
          path: ${CFG_TEST_VAR}
        dataset_prefix: ${CFG_UNSET_PREFIX:-lake}
        defaults:
          batch_size: ${CFG_UNSET_BATCH:-250}
          description: "${CFG_OTHER:-fallback} and $${LITERAL}"
        databases:
          db: [c]
        """,
    )
    config = load_config(path)
    assert config.destination.path == "/data/wh.duckdb"
    assert config.dataset_prefix == "lake"
    collection = config.databases["db"].collections["c"]
    assert collection.batch_size == 250
    # ${VAR:-default} uses the default when VAR is set but empty, like the shell.
    assert collection.description == "fallback and ${LITERAL}"


def test_missing_env_var_at_load_time_names_file_line_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              c:
                description: ${CFG_TEST_VAR}
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 5, "databases.db.collections.c.description", "CFG_TEST_VAR", "not set")


def test_malformed_reference_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  description: ${NOT VALID}\ndatabases:\n  db: [c]\n")
    assert_problem(load_error(path), path, 2, "defaults.description", "malformed")


def test_connection_url_stays_raw_and_resolves_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          connection_url: ${MONGODB_URI}
        databases:
          main: [c]
          analytics:
            connection_url: ${ANALYTICS_MONGODB_URI}
            collections: [events]
        """,
    )
    config = load_config(path)
    events = config.databases["analytics"].collections["events"]
    assert events.connection_url == "${ANALYTICS_MONGODB_URI}"
    assert config.databases["analytics"].connection_url == "${ANALYTICS_MONGODB_URI}"

    with pytest.raises(ConfigError) as info:
        resolve_connection_url(events)
    error = info.value
    assert (error.path, error.line, error.key) == (path, 6, "databases.analytics.connection_url")
    assert str(error).startswith(f"{path}, line 6, key databases.analytics.connection_url: ")
    assert "ANALYTICS_MONGODB_URI" in error.problem
    assert "'analytics'" in error.problem
    assert "'events'" in error.problem

    main = config.databases["main"].collections["c"]
    with pytest.raises(ConfigError) as info:
        resolve_connection_url(main)
    assert (info.value.line, info.value.key) == (2, "defaults.connection_url")

    monkeypatch.setenv("ANALYTICS_MONGODB_URI", "mongodb://reader:s3cret@db.example:27017/?authSource=admin")
    assert resolve_connection_url(events) == "mongodb://reader:s3cret@db.example:27017/?authSource=admin"


def test_connection_url_built_in_default_is_named(tmp_path: Path) -> None:
    collection = load_config(write(tmp_path, "databases:\n  db: [c]\n")).databases["db"].collections["c"]
    with pytest.raises(ConfigError) as info:
        resolve_connection_url(collection)
    assert "MONGODB_URI" in info.value.problem
    assert "built-in default" in info.value.problem
    assert info.value.key == "defaults.connection_url"


def test_resolve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_TEST_VAR", "x")
    assert resolve_env("a-${CFG_TEST_VAR}-${CFG_OTHER:-d}") == "a-x-d"
    with pytest.raises(ConfigError) as info:
        resolve_env("${CFG_OTHER}", where="databases.db.connection_url")
    assert info.value.key == "databases.db.connection_url"
    assert str(info.value).startswith("key databases.db.connection_url: environment variable CFG_OTHER")


def test_secret_from_env_never_appears_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_TEST_VAR", "hunter2-secret")
    path = write(
        tmp_path,
        """
        defaults:
          write_disposition: ${CFG_TEST_VAR}
          batch_size: ${CFG_TEST_VAR}
        databases:
          db:
            schedule: ${CFG_TEST_VAR}
            collections: [c]
        """,
    )
    error = load_error(path)
    assert "hunter2" not in str(error)
    assert_problem(error, path, 2, "defaults.write_disposition", "${CFG_TEST_VAR}", "merge, append, replace")
    assert_problem(error, path, 3, "defaults.batch_size", "${CFG_TEST_VAR}")
    assert_problem(error, path, 6, "databases.db.schedule", "${CFG_TEST_VAR}", "cron")


# --- masking -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mongodb://user:s3cret@host:27017/db", "mongodb://user:****@host:27017/db"),
        ("mongodb+srv://user:p%40ss@cluster0.example.net/", "mongodb+srv://user:****@cluster0.example.net/"),
        ("mongodb://user:p@ss@host1:1,host2:2/db", "mongodb://user:****@host1:1,host2:2/db"),
        ("postgresql://loader:pw@pg:5432/wh", "postgresql://loader:****@pg:5432/wh"),
        (
            "mongodb://host:27017/db?password=abc&authSource=admin",
            "mongodb://host:27017/db?password=****&authSource=admin",
        ),
        ("mongodb://host/db?pwd=abc", "mongodb://host/db?pwd=****"),
        ("mongodb://user@host:27017/db", "mongodb://user@host:27017/db"),
        ("mongodb://host:27017/db", "mongodb://host:27017/db"),
        ("mongodb://user:${DB_PASSWORD}@host/db", "mongodb://user:${DB_PASSWORD}@host/db"),
        ("${MONGODB_URI}", "${MONGODB_URI}"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_secrets_in_text() -> None:
    text = (
        "cannot reach mongodb://a:one@h1/x: timeout; fallback mongodb+srv://b:two@h2 failed, "
        "dsn host=pg password=three user=u"
    )
    masked = mask_secrets(text)
    for secret in ("one", "two", "three"):
        assert f":{secret}@" not in masked and f"={secret}" not in masked
    assert masked == (
        "cannot reach mongodb://a:****@h1/x: timeout; fallback mongodb+srv://b:****@h2 failed, "
        "dsn host=pg password=**** user=u"
    )


def test_config_error_masks_urls(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  connection_url: [mongodb://u:topsecret@h]\ndatabases:\n  db: [c]\n")
    error = load_error(path)
    assert "topsecret" not in str(error)


# --- errors ------------------------------------------------------------------------------------------------


def test_error_message_format_from_the_design(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        """
        defaults:
          connection_url: ${MONGODB_URI}
          write_disposition: merge
          primary_key: _id
        destination:
          type: duckdb
          path: data/warehouse.duckdb
        dataset_prefix: mongo
        databases:
          sample_mflix: [comments, movies]
          sample_analytics:
            collections:
              transactions:
                write_disposition: upsert
        """,
        "config/databases.yaml",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("config/databases.yaml")
    assert str(info.value) == (
        "config/databases.yaml, line 14, key databases.sample_analytics.collections.transactions."
        "write_disposition: 'upsert' is not one of merge, append, replace"
    )


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  db: [a, b\n  other: [c]\nx: 1\n")
    error = load_error(path)
    assert error.path == path
    assert error.line in (3, 4)
    assert str(error).startswith(f"{path}, line {error.line}: invalid YAML")
    path = write(tmp_path, "databases:\n  db:\n    - a\n   - b\n", "indent.yaml")
    error = load_error(path)
    assert error.line == 4


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    error = load_error(path)
    assert (error.path, error.line, error.key) == (path, None, None)
    assert str(error).startswith(f"{path}: file not found")


@pytest.mark.parametrize("body", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, body: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(body)
    error = load_error(path)
    assert str(error).startswith(f"{path}: the file is empty")


@pytest.mark.parametrize("body", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, body)
    error = load_error(path)
    assert "top level must be a mapping" in error.problem
    assert error.line == 1


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "databses:\n  db: [c]\n")
    error = load_error(path)
    assert_problem(error, path, 1, "databses", "did you mean databases", "allowed keys: defaults")
    assert "required key databases is missing" in str(error)


def test_unknown_keys_list_allowed_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          dataset: common
        destination:
          type: duckdb
          pth: x.duckdb
        databases:
          db:
            colections: [a]
            collections:
              c:
                batchsize: 5
                connection_url: mongodb://elsewhere
                incremental: {cursor_field: ts, start: 1}
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 2, "defaults.dataset", "set per database")
    assert_problem(error, path, 5, "destination.pth", "did you mean path", "allowed keys: type, path")
    assert_problem(
        error, path, 8, "databases.db.colections", "unknown key 'colections'", "did you mean collections"
    )
    assert_problem(
        error,
        path,
        11,
        "databases.db.collections.c.batchsize",
        "did you mean batch_size",
        "allowed keys: write_disposition, primary_key",
    )
    assert_problem(error, path, 12, "databases.db.collections.c.connection_url", "database option")
    assert_problem(
        error,
        path,
        13,
        "databases.db.collections.c.incremental.start",
        "allowed keys: cursor_field, initial_value",
    )


def test_wrong_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              c:
                batch_size: lots
                filter: [a]
                tags: {pii: 1}
                primary_key: {a: 1}
                projection: 5
                retries: 3
        """,
    )
    error = load_error(path)
    base = "databases.db.collections.c"
    assert_problem(error, path, 5, f"{base}.batch_size", "expected a whole number, got 'lots'")
    assert_problem(error, path, 6, f"{base}.filter", "expected a mapping")
    assert_problem(error, path, 7, f"{base}.tags.pii", "expected a string", "quote it")
    assert_problem(error, path, 8, f"{base}.primary_key", "a field name or a list of field names")
    assert_problem(error, path, 9, f"{base}.projection", "list of field names")
    assert_problem(error, path, 10, f"{base}.retries", "expected a mapping")
    assert len(error.errors) == 6


def test_several_problems_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          a:
            collections:
              c: {limit: 0}
          b:
            max_parallel_collections: 0
            collections:
              d: {max_table_nesting: -1}
        """,
    )
    error = load_error(path)
    assert [(e.line, e.key) for e in error.errors] == [
        (4, "databases.a.collections.c.limit"),
        (6, "databases.b.max_parallel_collections"),
        (8, "databases.b.collections.d.max_table_nesting"),
    ]
    assert str(error).splitlines() == [str(e) for e in error.errors]
    assert (error.line, error.key) == (4, "databases.a.collections.c.limit")


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("batch_size", "0", "positive"),
        ("batch_size", "-3", "positive"),
        ("limit", "0", "positive"),
        ("max_object_keys", "0", "positive"),
        ("max_table_nesting", "-1", "at least 0"),
    ],
)
def test_numeric_bounds(tmp_path: Path, option: str, value: str, fragment: str) -> None:
    path = write(tmp_path, f"databases:\n  db:\n    collections:\n      c: {{{option}: {value}}}\n")
    assert_problem(load_error(path), path, 4, f"databases.db.collections.c.{option}", fragment, value)


def test_numeric_bounds_at_defaults_and_database_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          max_parallel_collections: 0
          retries: {max_attempts: 0, backoff_seconds: -1}
        databases:
          db:
            max_parallel_collections: -2
            collections: [c]
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 2, "defaults.max_parallel_collections", "positive")
    assert_problem(error, path, 3, "defaults.retries.max_attempts", "at least 1")
    assert_problem(error, path, 3, "defaults.retries.backoff_seconds", "at least 0")
    assert_problem(error, path, 6, "databases.db.max_parallel_collections", "positive")


def test_max_table_nesting_zero_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  max_table_nesting: 0\ndatabases:\n  db: [c]\n")
    assert load_config(path).databases["db"].collections["c"].max_table_nesting == 0


@pytest.mark.parametrize(
    ("entry", "line", "key"),
    [
        ("db: []", 3, "databases.db"),
        ("db:\n    collections: []", 4, "databases.db.collections"),
        ("db:\n    collections: {}", 4, "databases.db.collections"),
        ("db:\n    collections:", 4, "databases.db.collections"),
        ("db:\n    dataset: x", 3, "databases.db"),
        ("db:", 3, "databases.db"),
    ],
)
def test_database_without_collections(tmp_path: Path, entry: str, line: int, key: str) -> None:
    path = write(tmp_path, f"defaults: {{}}\ndatabases:\n  {entry}\n")
    error = load_error(path)
    assert_problem(error, path, line, key, "collections")


def test_databases_missing_or_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "databases: {}\n")
    assert_problem(load_error(path), path, 1, "databases", "lists no databases")
    path = write(tmp_path, "databases: [a, b]\n", "list.yaml")
    assert_problem(load_error(path), path, 1, "databases", "expected a mapping of databases")
    path = write(tmp_path, "defaults: {}\n", "none.yaml")
    assert "required key databases is missing" in str(load_error(path))


def test_duplicate_collections_in_list_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db: [a, b, a]
          other:
            collections:
              - x
              - y
              - x
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 2, "databases.db[2]", "collection 'a' is listed twice")
    assert_problem(error, path, 7, "databases.other.collections[2]", "'x' is listed twice (lines 5 and 7)")


def test_duplicate_collection_keys_in_mapping_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              a: {limit: 1}
              b: {}
              a: {limit: 2}
        """,
    )
    assert_problem(
        load_error(path),
        path,
        6,
        "databases.db.collections.a",
        "collection 'a' is listed twice (lines 4 and 6)",
    )


def test_duplicate_databases_and_option_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          batch_size: 5
          batch_size: 6
        databases:
          db: [a]
          other: [b]
          db: [c]
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 7, "databases.db", "database 'db' is listed twice (lines 5 and 7)")
    assert_problem(error, path, 3, "defaults.batch_size", "given twice")


def test_merge_keys_are_not_reported_as_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              a: &base {limit: 1, batch_size: 2}
              b: {<<: *base, limit: 3}
              c: {<<: *base, limit: 4}
        """,
    )
    assert load_config(path).databases["db"].collections["c"].limit == 4


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ('""', "must not be empty"),
        ("a" * 64, "longer than MongoDB's 63 bytes"),
        ('"é' + "a" * 62 + '"', "longer than MongoDB's 63 bytes"),
        ('"a/b"', "'/'"),
        ('"a\\\\b"', "'\\\\'"),
        ('"a.b"', "'.'"),
        ('"a b"', "' '"),
        ("'a\"b'", "'\"'"),
        ('"a$b"', "'$'"),
        ('"a*b"', "'*'"),
        ('"a<b"', "'<'"),
        ('"a>b"', "'>'"),
        ('"a:b"', "':'"),
        ('"a|b"', "'|'"),
        ('"a?b"', "'?'"),
        ('"a\\0b"', "NUL"),
    ],
)
def test_forbidden_database_names(tmp_path: Path, name: str, fragment: str) -> None:
    path = write(tmp_path, f"databases:\n  ok: [c]\n  {name}: [c]\n")
    error = load_error(path)
    assert len(error.errors) == 1
    assert error.line == 3
    assert error.key.startswith("databases.")
    assert fragment in error.problem


def test_longest_allowed_database_name(tmp_path: Path) -> None:
    name = "a" * 63
    assert list(load_config(write(tmp_path, f"databases:\n  {name}: [c]\n")).databases) == [name]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ('""', "must not be empty"),
        ('"$cmd"', "'$'"),
        ('"a\\0b"', "NUL"),
        ("system.users", "starts with 'system.'"),
    ],
)
def test_forbidden_collection_names(tmp_path: Path, name: str, fragment: str) -> None:
    path = write(tmp_path, f"databases:\n  db:\n    collections:\n      ok: {{}}\n      {name}: {{}}\n")
    error = load_error(path)
    assert len(error.errors) == 1
    assert error.line == 5
    assert error.key.startswith("databases.db.collections.")
    assert fragment in error.problem
    list_form = write(tmp_path, f"databases:\n  db: [ok, {name}]\n", "list.yaml")
    assert_problem(load_error(list_form), list_form, 2, "databases.db[1]", fragment)


def test_colliding_asset_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              orders.eu: {}
              orders-eu: {table_name: orders_eu_2}
        """,
    )
    assert_problem(
        load_error(path), path, 5, "databases.db.collections.orders-eu", "'orders.eu' (line 4)", "'orders_eu'"
    )


def test_colliding_asset_keys_and_tables_across_databases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          a: [users]
          b:
            key_prefix: raw_a
            collections: [users]
          c:
            dataset: mongo_a
            collections: [users]
        """,
    )
    error = load_error(path)
    assert_problem(error, path, 5, "databases.b.collections[0]", "asset key raw_a/users", "key_prefix")
    assert_problem(error, path, 8, "databases.c.collections[0]", "table mongo_a.users", "databases.a[0]")


def test_incremental_without_cursor_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              c:
                incremental: {initial_value: 5}
                write_disposition: append
        """,
    )
    assert_problem(
        load_error(path), path, 5, "databases.db.collections.c.incremental.cursor_field", "required key"
    )


def test_incremental_with_replace_loses_data(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        databases:
          db:
            collections:
              c:
                incremental: {cursor_field: ts}
                write_disposition: replace
        """,
    )
    assert_problem(load_error(path), path, 5, "databases.db.collections.c.incremental", "would lose data")


def test_conflict_points_at_the_most_specific_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          write_disposition: replace
        databases:
          db:
            collections:
              a: {}
              b:
                incremental: {cursor_field: ts}
              c:
                incremental: {cursor_field: ts}
        """,
    )
    error = load_error(path)
    found = assert_problem(error, path, 8, "databases.db.collections.b.incremental", "would lose data")
    assert "defaults.write_disposition, line 2" in found.problem
    assert_problem(error, path, 10, "databases.db.collections.c.incremental", "would lose data")
    assert len(error.errors) == 2


PROJECTION_REFUSALS = [
    pytest.param(
        "{projection: {_id: 0, v: 1}}",
        "projection",
        "projection {_id: 0, v: 1} leaves out _id, which primary_key uses to tell documents apart under "
        "write_disposition merge: documents would merge into one row",
        id="merge-drops-_id",
    ),
    pytest.param(
        "{primary_key: [shop, sku], projection: {shop: 1, name: 1}}",
        "projection",
        "projection {shop: 1, name: 1} leaves out sku, which primary_key uses",
        id="merge-drops-a-key-field",
    ),
    pytest.param(
        "{write_disposition: append, incremental: {cursor_field: ts}, projection: {_id: 0}}",
        "projection",
        "projection {_id: 0} leaves out _id, which primary_key uses to tell apart the documents at the incremental "
        "cursor's last value",
        id="incremental-drops-_id",
    ),
    pytest.param(
        "{write_disposition: append, incremental: {cursor_field: ts}, projection: {v: 1}}",
        "projection",
        "projection {v: 1} leaves out ts, the incremental cursor_field: the reads would lose their place",
        id="incremental-drops-the-cursor",
    ),
    pytest.param(
        "{incremental: {cursor_field: ts}, projection: {ts.day: 1}}",
        "projection",
        "projection {ts.day: 1} keeps only part of ts, the incremental cursor_field",
        id="keeps-part-of-the-cursor",
    ),
    pytest.param(
        "{incremental: {cursor_field: ts}, projection: {ts: {$slice: 1}}}",
        "projection",
        "projection {ts: {'$slice': 1}} rewrites ts",
        id="rewrites-the-cursor",
    ),
    pytest.param(
        "{incremental: {cursor_field: ts}, projection: {ts: 0}}",
        "projection",
        "projection {ts: 0} leaves out ts",
        id="excludes-the-cursor",
    ),
]


@pytest.mark.parametrize(("options", "key", "message"), PROJECTION_REFUSALS)
def test_projection_that_drops_a_key_or_the_cursor_is_refused(
    tmp_path: Path, options: str, key: str, message: str
) -> None:
    path = write(tmp_path, f"databases:\n  db:\n    collections:\n      c: {options}\n")
    found = assert_problem(load_error(path), path, 4, f"databases.db.collections.c.{key}", message)
    assert "give the projection as a list of fields" in found.problem


def test_projection_refusal_points_at_the_level_that_gave_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          projection: {_id: 0, v: 1}
        databases:
          db:
            collections:
              kept: {write_disposition: append}
              merged: {}
        """,
    )
    error = load_error(path)
    found = assert_problem(error, path, 2, "defaults.projection", "leaves out _id")
    assert "primary_key is the default ('_id',)" in found.problem
    assert "write_disposition is the default 'merge'" in found.problem
    assert len(error.errors) == 1  # append without incremental: no key or cursor needed


@pytest.mark.parametrize(
    "options",
    [
        "{projection: [v]}",  # a list always keeps _id, the primary key and the cursor
        "{projection: {v: 0}}",
        "{projection: {v: 1, _id: 1}}",
        "{projection: {_id: 0, v: 1}, write_disposition: append}",
        "{projection: {_id: 0, sku: 1}, primary_key: sku}",
        "{projection: {ts: 1}, incremental: {cursor_field: ts.day}}",
    ],
)
def test_projection_that_keeps_what_the_read_needs_is_valid(tmp_path: Path, options: str) -> None:
    path = write(tmp_path, f"databases:\n  db:\n    collections:\n      c: {options}\n")
    assert load_config(path).databases["db"].collections["c"].projection is not None


@pytest.mark.parametrize(
    ("yaml_value", "message"),
    [
        ("{day: 1}", "a mapping cannot be an initial_value: a document or an array has no single place"),
        ("[1, 2]", "a list cannot be an initial_value"),
        (".nan", "nan cannot be an initial_value: MongoDB's $gte NaN matches NaN alone"),
        ("{$numberDecimal: NaN}", "cannot be an initial_value: MongoDB's $gte NaN matches NaN alone"),
        ("{$regularExpression: {pattern: a, options: ''}}", "MongoDB cannot select regular expressions by range"),
        ("{$minKey: 1}", "a MinKey is not a value a read starts from"),
    ],
)
def test_initial_value_that_no_read_can_start_from_is_refused(tmp_path: Path, yaml_value: str, message: str) -> None:
    incremental = f"{{cursor_field: ts, initial_value: {yaml_value}}}"
    path = write(tmp_path, f"databases:\n  db:\n    collections:\n      c: {{incremental: {incremental}}}\n")
    key = "databases.db.collections.c.incremental.initial_value"
    found = assert_problem(load_error(path), path, 4, key, message)
    assert "give a number, a string, a date-time, an ObjectId" in found.problem


def test_merge_needs_a_primary_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          primary_key: []
        databases:
          db:
            collections:
              a: {write_disposition: append}
              b: {}
        """,
    )
    error = load_error(path)
    # primary_key (defaults) and write_disposition (the built-in merge): blame what the user wrote.
    found = assert_problem(error, path, 2, "defaults.primary_key", "merge needs a primary_key")
    assert "default 'merge'" in found.problem
    assert len(error.errors) == 1


def test_invalid_cron(tmp_path: Path) -> None:
    path = write(tmp_path, 'databases:\n  db:\n    schedule: "every hour"\n    collections: [c]\n')
    assert_problem(load_error(path), path, 3, "databases.db.schedule", "'every hour' is not a valid cron")


def test_schedule_only_per_database(tmp_path: Path) -> None:
    path = write(tmp_path, 'defaults:\n  schedule: "0 * * * *"\ndatabases:\n  db: [c]\n')
    assert_problem(load_error(path), path, 2, "defaults.schedule", "set per database")


def test_unknown_destination_type(tmp_path: Path) -> None:
    path = write(tmp_path, "destination:\n  type: duckbd\ndatabases:\n  db: [c]\n")
    found = assert_problem(load_error(path), path, 2, "destination.type", "unknown destination type 'duckbd'")
    assert "did you mean duckdb" in found.problem
    assert "bigquery" in found.problem and "postgres" in found.problem


@pytest.mark.parametrize(
    ("body", "line", "key", "env_var"),
    [
        (
            "destination:\n  type: bigquery\n  credentials: {project_id: p, private_key: k}\n",
            3,
            "destination.credentials",
            "DESTINATION__BIGQUERY__CREDENTIALS__PROJECT_ID",
        ),
        (
            "destination:\n  type: postgres\n  password: hunter2\n",
            3,
            "destination.password",
            "DESTINATION__POSTGRES__CREDENTIALS__PASSWORD",
        ),
        (
            "destination:\n  type: bigquery\n  options:\n    private_key: hunter2\n",
            4,
            "destination.options.private_key",
            "DESTINATION__BIGQUERY__CREDENTIALS__PRIVATE_KEY",
        ),
    ],
)
def test_credentials_in_destination(tmp_path: Path, body: str, line: int, key: str, env_var: str) -> None:
    path = write(tmp_path, body + "databases:\n  db: [c]\n")
    error = load_error(path)
    found = assert_problem(error, path, line, key, "credentials do not belong in the YAML", env_var)
    assert ".dlt/secrets.toml" in found.problem
    assert "hunter2" not in str(error)
    assert len(error.errors) == 1


def test_invalid_extended_json_in_filter(tmp_path: Path) -> None:
    path = write(
        tmp_path, "databases:\n  db:\n    collections:\n      c:\n        filter: {_id: {$oid: xyz}}\n"
    )
    assert_problem(load_error(path), path, 5, "databases.db.collections.c.filter", "extended JSON")


def test_config_error_pickles_with_its_details(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  db:\n    collections:\n      c: {limit: 0, batch_size: 0}\n")
    error = load_error(path)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert (copy.path, copy.line, copy.key) == (error.path, error.line, error.key)
    assert len(copy.errors) == 2


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  ok: [a]\n  db: !!python/object:os.system [a]\n")
    assert_problem(load_error(path), path, 3, "databases.db", "tag", "not supported")


# --- speed -------------------------------------------------------------------------------------------------


def test_large_config_loads_fast(tmp_path: Path) -> None:
    lines = ["defaults:", "  connection_url: ${MONGODB_URI}", "databases:"]
    for d in range(100):
        lines += [f"  db_{d:03d}:", "    collections:"]
        for c in range(50):
            options = (
                "{incremental: {cursor_field: updated_at}, write_disposition: append}" if c % 5 == 0 else "{}"
            )
            lines.append(f"      coll_{c:02d}: {options}")
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    durations = []
    for _ in range(2):
        started = time.perf_counter()
        config = load_config(path)
        durations.append(time.perf_counter() - started)
    assert sum(len(database.collections) for database in config.databases.values()) == 5000
    assert config.databases["db_099"].collections["coll_45"].incremental.cursor_field == "updated_at"
    assert min(durations) < 1.0, durations


def test_schema_contract_inherits_and_names_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  schema_contract: {columns: freeze}\n"
        "databases:\n  shop:\n    collections:\n      orders: {}\n      events: {schema_contract: evolve}\n"
    )
    collections = load_config(path).databases["shop"].collections
    assert collections["orders"].schema_contract == {"columns": "freeze"}
    assert collections["events"].schema_contract == "evolve"

    path.write_text("databases:\n  shop:\n    collections:\n      events: {schema_contract: {rows: freeze}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}, line 4, key databases.shop.collections.events.schema_contract: a mapping is not a schema "
        "contract: give one of evolve, freeze, discard_row, discard_value, or a mapping of tables, columns, "
        "data_type to one of them"
    )


@pytest.mark.parametrize(("value", "expected"), [("128MB", "128MB"), ("1.5 GiB", "1.5 GiB"), ("null", None)])
def test_duckdb_memory_limit(tmp_path: Path, value: str, expected: str | None) -> None:
    path = write(tmp_path, f"destination: {{type: duckdb, memory_limit: {value}}}\ndatabases:\n  db: [c]\n")
    assert load_config(path).destination.memory_limit == expected


def test_duckdb_memory_limit_needs_a_size(tmp_path: Path) -> None:
    path = write(tmp_path, "destination:\n  type: duckdb\n  memory_limit: lots\ndatabases:\n  db: [c]\n")
    assert_problem(load_error(path), path, 3, "destination.memory_limit", "should match pattern", "lots")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("mongodb://loader:hunter2@db.internal:27017/", True),
        ("mongodb+srv://loader:hunter2@cluster0.example.mongodb.net/?retryWrites=true", True),
        ("mongodb://loader:${MONGODB_PASSWORD}@db.internal:27017/", False),
        ("mongodb://db.internal:27017/?authSource=admin", False),
        ("${MONGODB_URI}", False),
    ],
)
def test_a_literal_password_in_connection_url_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, refused: bool
) -> None:
    monkeypatch.setenv("MONGODB_PASSWORD", "x")
    monkeypatch.setenv("MONGODB_URI", "mongodb://h/")
    path = tmp_path / "databases.yaml"
    path.write_text(f"databases:\n  shop:\n    connection_url: \"{url}\"\n    collections: [orders]\n")
    if not refused:
        load_config(path)
        return
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}, line 3, key databases.shop.connection_url: holds a literal password")
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("freshness", "expected"),
    [
        ("{max_lag: 2h}", (dt.timedelta(hours=2), None)),
        ("{max_lag: 1h30m, warn_after: 45m}", (dt.timedelta(minutes=90), dt.timedelta(minutes=45))),
        ("{max_lag: 1d}", (dt.timedelta(days=1), None)),
        ("{max_lag: soon}", "key databases.shop.collections.orders.freshness.max_lag: 'soon' is not a duration"),
        ("{max_lag: 1h, warn_after: 2h}", "warn_after must be shorter than max_lag"),
        ("{warn_after: 2h}", "required key max_lag is missing"),
    ],
)
def test_freshness_takes_short_durations(tmp_path: Path, freshness: str, expected: object) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(f"databases:\n  shop:\n    collections:\n      orders: {{freshness: {freshness}}}\n")
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_config(path)
        return
    policy = load_config(path).databases["shop"].collections["orders"].freshness
    assert policy is not None and (policy.max_lag, policy.warn_after) == expected
