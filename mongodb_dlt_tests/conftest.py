"""Shared fixtures: the MongoDB stand-in over a real socket, and a project folder wired to it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import mongomock
import pytest

from mongodb_dlt.testing import MongoStandIn


@pytest.fixture
def standin() -> Iterator[MongoStandIn]:
    with MongoStandIn(mongomock.MongoClient()) as server:
        yield server


@dataclass
class Project:
    """A folder with a databases.yaml pointing at the stand-in and a DuckDB file of its own."""

    root: Path
    config: Path
    duckdb_path: Path
    pipelines_dir: Path

    def write_config(self, body: str) -> Path:
        self.config.write_text(textwrap.dedent(body).replace("{duckdb}", str(self.duckdb_path)))
        return self.config

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.duckdb_path), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    def scalar(self, sql: str) -> object:
        return self.query(sql)[0][0]

    def tables(self, dataset: str) -> set[str]:
        rows = self.query(
            f"select table_name from information_schema.tables where table_schema = '{dataset}'"
        )
        return {name for (name,) in rows if not name.startswith("_dlt")}


@pytest.fixture
def project(tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    project = Project(
        root=root,
        config=root / "databases.yaml",
        duckdb_path=root / "warehouse.duckdb",
        pipelines_dir=root / "pipelines",
    )
    monkeypatch.setenv("MONGODB_URI", standin.uri)
    monkeypatch.setenv("MONGODB_DLT_CONFIG", str(project.config))
    monkeypatch.setenv("MONGODB_DLT_PIPELINES_DIR", str(project.pipelines_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    (root / "dagster_home").mkdir()
    # dlt reads these from the environment in every process; keep its telemetry and folders local.
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.chdir(root)
    return project


@pytest.fixture
def instance(project: Project) -> Iterator[dg.DagsterInstance]:
    # Launched runs start at once in a subprocess, as with `dagster dev` (no queue daemon in tests).
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
    with dg.instance_for_test(temp_dir=str(project.root / "dagster_home"), overrides=overrides) as dagster_instance:
        yield dagster_instance
