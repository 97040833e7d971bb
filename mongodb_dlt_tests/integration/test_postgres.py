"""PostgreSQL as a real server destination, started by the tests (``postgres_server``): every value lands as it
lands in DuckDB (whose round trip test_roundtrip proves exact), every write disposition loads exactly once, and
collections load into one dataset at the same time."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dlt.destinations.impl.postgres.sql_client import Psycopg2SqlClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.postgres import PostgresServer
from mongodb_dlt_tests.postgres import query as postgres_query
from mongodb_dlt_tests.strategies import bodies, id_kinds, with_ids

LINKS = {"_dlt_id", "_dlt_parent_id", "_dlt_root_id", "_dlt_load_id"}
"""Columns whose values are made per load (random row ids, load ids): compared by the rows they link, not by value."""


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


# PostgreSQL text cannot hold the NUL character: such documents are refused, not stored (tested below)
postgres_collections = st.lists(st.tuples(id_kinds, bodies), min_size=1, max_size=8).map(with_ids).filter(
    lambda documents: not has_nul(documents)
)


def _cell(value: Any, is_json: bool) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, float):
        return repr(value)  # NaN, -0.0 and every bit of the double, compared as text
    if is_json:
        parsed = json.loads(value) if isinstance(value, str) else value  # DuckDB gives JSON text, psycopg2 parses
        return json.dumps(parsed, sort_keys=True)  # jsonb keeps no key order: README says so
    return value


def contents(project: Project, dataset: str) -> dict[str, Counter[tuple[tuple[str, Any], ...]]]:
    """Every table of the dataset as a multiset of rows, each row its (column, value) pairs without the per-load
    columns, and each child row with its parent row's values instead of its parent's random id."""
    json_columns = {
        (table, column)
        for table, column, data_type in project.query(
            "select table_name, column_name, data_type from information_schema.columns "
            f"where table_schema = '{dataset}'"
        )
        if data_type.lower() in ("json", "jsonb")
    }
    rows_by_id: dict[str, tuple[tuple[str, Any], ...]] = {}
    tables: dict[str, Counter[tuple[tuple[str, Any], ...]]] = {}
    for table in sorted(project.tables(dataset), key=lambda name: name.count("__")):  # parents before children
        columns = [name for (name,) in project.query(
            "select column_name from information_schema.columns "
            f"where table_schema = '{dataset}' and table_name = '{table}'"
        )]
        rows = Counter()
        for record in project.query(f'select {", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)} '
                                    f'from {dataset}."{table}"'):
            cells = dict(zip(columns, record, strict=True))
            row = tuple(sorted(
                (column, _cell(value, (table, column) in json_columns))
                for column, value in cells.items() if column not in LINKS and value is not None
            ))
            if cells.get("_dlt_parent_id") is not None:
                row = (*row, ("parent", rows_by_id[cells["_dlt_parent_id"]]))
            rows_by_id[cells["_dlt_id"]] = row
            rows[row] += 1
        tables[table] = rows
    return tables


def load(project: Project, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch, options: str = "{}") -> Any:
    project.enter(standin, monkeypatch)
    project.write_config(
        f"""
        defaults: {{retries: {{max_attempts: 1}}, batch_size: 3}}
        destination: {{destination}}
        databases:
          shop:
            collections:
              docs: {options}
        """
    )
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    return loader.load_collection(config.databases["shop"].collections["docs"], "mongo_shop", count_rows=True)


@settings(
    max_examples=6, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(documents=postgres_collections)
def test_every_value_lands_in_postgres_as_in_duckdb(
    documents: list[dict], tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
    standin: MongoStandIn,
) -> None:
    standin.client.shop.docs.delete_many({})
    standin.client.shop.docs.insert_many(documents)
    root = tmp_path_factory.mktemp("values")
    in_duckdb = Project.create(root / "duckdb")
    in_postgres = Project.create(root / "postgres", postgres_server.new_database("values"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        for project in (in_duckdb, in_postgres):
            result = load(project, standin, monkeypatch)
            assert result.succeeded, result.error
    assert contents(in_postgres, "mongo_shop") == contents(in_duckdb, "mongo_shop")



def test_collections_load_at_once_into_one_new_postgres_dataset(
    tmp_path: Path, postgres_server: PostgresServer, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL takes several writers: six collections of one database load at the same moment into one dataset
    that does not exist yet (each dlt pipeline creates the schema and the shared ``_dlt_*`` tables if missing)."""
    names = [f"c{i}" for i in range(6)]
    for number, name in enumerate(names):
        documents = [{"_id": i, "n": i, "tags": ["a", "b"][: i % 3]} for i in range(50 + number)]
        standin.client.shop[name].insert_many(documents)
    project = Project.create(tmp_path / "p", postgres_server.new_database("together")).enter(standin, monkeypatch)
    project.write_config(
        f"""
        defaults: {{retries: {{max_attempts: 1}}, batch_size: 10}}
        destination: {{destination}}
        databases:
          shop: [{", ".join(names)}]
        """
    )
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    collections = config.databases["shop"].collections
    start = threading.Barrier(len(names))

    def load_one(name: str) -> Any:
        start.wait()
        return loader.load_collection(collections[name], "mongo_shop")

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(load_one, names))
    assert [result.error for result in results] == [None] * len(names)
    for number, name in enumerate(names):
        assert project.query(f"select count(*), count(distinct _mongo_key) from mongo_shop.{name}") == [
            (50 + number, 50 + number)
        ]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"_id": 7, "s": "a\x00b"}, "'s'"),
        ({"_id": 7, "lines": [{"sku": "\x00"}]}, "'sku'"),
        ({"_id": 7, "tags": ["ok", "x\x00"]}, "'(array element)'"),
        ({"_id": 7, "deep": {"a": {"b": {"c": "\x00"}}}}, "'deep.a'"),  # past max_table_nesting: a JSON column
    ],
    ids=["string", "in an array of documents", "in an array of strings", "in JSON"],
)
def test_text_postgres_cannot_hold_is_refused_by_document_and_field_before_loading(
    document: dict, field: str, tmp_path: Path, postgres_server: PostgresServer, standin: MongoStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin.client.shop.docs.insert_many([{"_id": 1, "s": "fine", "tags": ["a"]}, document])
    project = Project.create(tmp_path / "p", postgres_server.new_database("nul"))
    result = load(project, standin, monkeypatch, "{max_table_nesting: 1}")
    assert not result.succeeded and result.attempts == 1
    refusal = f"document _mongo_key='n:7', field {field}: the text holds the NUL character (U+0000)"
    assert refusal in (result.error or "")
    schemas = {schema for (schema,) in project.query("select schema_name from information_schema.schemata")}
    assert "mongo_shop" not in schemas, "nothing was loaded"

    standin.client.shop.docs.delete_one({"_id": 7})
    assert load(project, standin, monkeypatch, "{max_table_nesting: 1}").succeeded


def test_a_load_that_loses_the_race_to_create_the_dataset_loads_again(
    tmp_path: Path, postgres_server: PostgresServer, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The race of the test above, made to happen: another load creates the dataset between dlt's check that it is
    missing and its own CREATE SCHEMA."""
    standin.client.shop.docs.insert_many([{"_id": i, "tags": ["a"]} for i in range(5)])
    project = Project.create(tmp_path / "p", postgres_server.new_database("race"))
    original = Psycopg2SqlClient.create_dataset
    raced: list[str] = []

    def create_dataset(self: Psycopg2SqlClient) -> None:
        if not raced:
            raced.append(self.dataset_name)
            postgres_query(project.postgres_uri or "", f'CREATE SCHEMA "{self.dataset_name}"', commit=True)
        original(self)

    monkeypatch.setattr(Psycopg2SqlClient, "create_dataset", create_dataset)
    with caplog.at_level(logging.INFO, logger="mongodb_dlt"):
        result = load(project, standin, monkeypatch)
    assert raced == ["mongo_shop"]
    assert result.succeeded, result.error
    assert "the dataset's tables changed under this load" in caplog.text and "attempt 2 of 5" in caplog.text
    assert project.query("select count(*) from mongo_shop.docs") == [(5,)]
