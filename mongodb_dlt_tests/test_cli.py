"""The console script: validate, discover, demo."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import mongomock
import pytest

from mongodb_dlt.cli import main
from mongodb_dlt.testing import MongoStandIn, populate_sample_data

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "databases.yaml"


def test_validate_prints_what_the_shipped_yaml_creates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(REPO_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "database sample_mflix: op mongodb_sample_mflix, dataset mongo_sample_mflix" in out
    assert "raw_sample_mflix/movies" in out and "mongo_sample_mflix.movies" in out
    assert "raw_sample_analytics/transactions" in out and "analytics_raw.transactions" in out
    assert "append, incremental on date" in out
    assert "2 database(s), 7 collection(s)" in out


def test_validate_names_file_line_and_key_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("databases:\n  shop:\n    collections:\n      orders:\n        write_disposition: upsert\n")
    done = subprocess.run(
        [sys.executable, "-m", "mongodb_dlt.cli", "validate", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert f"{path}, line 5, key databases.shop.collections.orders.write_disposition" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_masks_a_password_written_into_the_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  connection_url: mongodb://etl:Pa55word@db.internal:27017/\ndatabases:\n  shop: [orders]\n"
    )
    assert main(["validate", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "Pa55word" not in captured.out + captured.err
    assert "mongodb://etl:****@db.internal:27017/" in captured.out


def test_validate_warns_about_unset_connection_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    path = tmp_path / "databases.yaml"
    path.write_text("databases:\n  shop: [orders]\n")
    assert main(["validate", "--config", str(path)]) == 0
    assert "MONGODB_URI" in capsys.readouterr().err


def test_discover_prints_a_yaml_snippet(standin: MongoStandIn, capsys: pytest.CaptureFixture[str]) -> None:
    standin.client.shop.orders.insert_one({"n": 1})
    standin.client.shop.customers.insert_one({"n": 1})
    standin.client.crm.contacts.insert_one({"n": 1})
    assert main(["discover", "--uri", standin.uri]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["databases:", "  crm: [contacts]", "  shop: [customers, orders]"]


def test_discover_reports_an_unreachable_server_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--uri", "mongodb://u:TopSecret@127.0.0.1:9/?connectTimeoutMS=200", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot list mongodb://u:****@127.0.0.1:9/" in err and "TopSecret" not in err


def test_demo_loads_the_sample_databases_into_duckdb_in_an_empty_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mongodb_dlt.cli", "demo", "--scale", "0.2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assets = [line.split()[0] for line in lines if line.startswith("raw_")]
    assert assets == [
        "raw_sample_analytics/accounts", "raw_sample_analytics/customers", "raw_sample_analytics/transactions",
        "raw_sample_mflix/comments", "raw_sample_mflix/movies", "raw_sample_mflix/theaters", "raw_sample_mflix/users",
    ]
    database = tmp_path / "mongodb_dlt_demo.duckdb"
    assert f"DuckDB file: {database}" in done.stdout

    # The same seed and scale give the same documents: every one the YAML selects lands exactly once.
    sample = mongomock.MongoClient()
    populate_sample_data(sample, scale=0.2)
    expected = {
        "mongo_sample_mflix.comments": sample.sample_mflix.comments.count_documents({}),
        "mongo_sample_mflix.movies": sample.sample_mflix.movies.count_documents({}),
        "mongo_sample_mflix.theaters": sample.sample_mflix.theaters.count_documents({}),
        "mongo_sample_mflix.users": sample.sample_mflix.users.count_documents({}),
        "analytics_raw.accounts": sample.sample_analytics.accounts.count_documents({}),
        "analytics_raw.transactions": sample.sample_analytics.transactions.count_documents(
            {"date": {"$gte": datetime(2020, 1, 1)}}
        ),
        "analytics_raw.customers": sample.sample_analytics.customers.count_documents({"active": True}),
    }
    printed = {line.split()[0]: int(line.split()[1]) for line in lines if line.startswith("raw_")}
    with duckdb.connect(str(database), read_only=True) as connection:
        for table, count in expected.items():
            rows, distinct_ids = connection.execute(f"select count(*), count(distinct _id) from {table}").fetchone()
            assert rows == distinct_ids == count > 0, table
            schema, name = table.split(".")
            key = f"raw_sample_{'analytics' if schema == 'analytics_raw' else 'mflix'}/{name}"
            assert printed[key] == count
