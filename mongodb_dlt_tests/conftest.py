"""Shared fixtures: the MongoDB stand-in over a real socket, a PostgreSQL server, and a project folder wired to them."""

from __future__ import annotations

import gc
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import mongomock
import pytest

from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests import postgres
from mongodb_dlt_tests.postgres import CREDENTIALS_ENV

TESTS = Path(__file__).parent
FOLDER_MARKERS = ("unit", "integration", "e2e")


def _folder(item: pytest.Item) -> str | None:
    relative = item.path.relative_to(TESTS) if item.path.is_relative_to(TESTS) else None
    return relative.parts[0] if relative is not None and relative.parts[0] in FOLDER_MARKERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its folder's name (pyproject.toml declares the markers): ``-m "not e2e"``. The
    folders run fastest first, unit, integration, then e2e (each module's tests together and in their order), so a
    failure shows soonest."""
    for item in items:
        if (folder := _folder(item)) is not None:
            item.add_marker(folder)
    rank = {folder: position for position, folder in enumerate(FOLDER_MARKERS)}
    items.sort(key=lambda item: rank.get(_folder(item) or "", len(rank)))


def pytest_sessionstart(session: pytest.Session) -> None:
    """The tests allocate container objects by the million (dlt schemas, Arrow and Dagster metadata, hypothesis
    data) over a heap that dagster, dlt and pyarrow make large: with the default threshold (a collection every 700
    allocations), full collections of that heap were a tenth of the unit tests' time (4 s of 33). The same garbage
    is collected, in fewer passes."""
    gc.set_threshold(10_000, 10, 10)


@pytest.fixture(autouse=True, scope="session")
def _no_dlt_telemetry() -> Iterator[None]:
    """dlt reads this from the environment in every process, ours and the subprocesses the tests start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
        yield


def _release_dlt_contexts() -> None:
    """dlt keeps, for every thread that ever ran a load, the last pipeline it activated and the configuration values
    it resolved since its last pipeline step (``Container().thread_contexts``: ``PipelineContext``,
    ``TraceLogContext``), for as long as the process lives. Through the destination's credentials they hold the
    DuckDB connections the loader passed to dlt: closed, but alive. Were they still alive at interpreter exit,
    DuckDB's nanobind bindings would report each one (and every DuckDB type and function) as leaked."""
    if "dlt" not in sys.modules:
        return
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.utils import TraceLogContext
    from dlt.common.pipeline import PipelineContext

    for context, _ in list(Container().thread_contexts.values()):
        if (traces := context.get(TraceLogContext)) is not None:
            traces.clear()
        if (pipelines := context.get(PipelineContext)) is not None:
            pipelines.deactivate()


@pytest.fixture(autouse=True)
def _dlt_contexts_released() -> Iterator[None]:
    yield
    _release_dlt_contexts()


@pytest.fixture(autouse=True, scope="session")
def _nothing_of_duckdb_left_at_exit() -> Iterator[None]:
    yield
    _release_dlt_contexts()
    gc.collect()  # what dlt held is partly in reference cycles: free it now, while DuckDB's bindings are alive


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """One PostgreSQL server for the session, started by the first test that asks for it (a fraction of a second)."""
    server = postgres.PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture
def standin() -> Iterator[MongoStandIn]:
    with MongoStandIn(mongomock.MongoClient()) as server:
        yield server


@dataclass
class Project:
    """A folder with a databases.yaml pointing at the stand-in, and a warehouse of its own: a DuckDB file, or a
    database of the session's PostgreSQL server (``postgres_uri``)."""

    root: Path
    config: Path
    duckdb_path: Path
    pipelines_dir: Path
    postgres_uri: str | None = None

    @property
    def destination(self) -> str:
        """The YAML's ``destination:`` as a flow mapping (PostgreSQL's credentials come from the environment)."""
        if self.postgres_uri is not None:
            return "{type: postgres}"
        return f'{{type: duckdb, path: "{self.duckdb_path}"}}'

    @property
    def env(self) -> dict[str, str]:
        """What a process loading this project needs in its environment besides MONGODB_URI."""
        return {CREDENTIALS_ENV: self.postgres_uri} if self.postgres_uri is not None else {}

    def write_config(self, body: str) -> Path:
        text = textwrap.dedent(body).replace("{destination}", self.destination)
        self.config.write_text(text.replace("{duckdb}", str(self.duckdb_path)))
        return self.config

    def query(self, sql: str) -> list[tuple]:
        if self.postgres_uri is not None:
            return postgres.query(self.postgres_uri, sql)
        with duckdb.connect(str(self.duckdb_path), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    def scalar(self, sql: str) -> object:
        return self.query(sql)[0][0]

    def tables(self, dataset: str) -> set[str]:
        rows = self.query(
            f"select table_name from information_schema.tables where table_schema = '{dataset}'"
        )
        return {name for (name,) in rows if not name.startswith("_dlt")}

    @classmethod
    def create(cls, root: Path, postgres_uri: str | None = None) -> Project:
        """A new project folder at ``root``, with a Dagster home and a dlt working folder of its own; its warehouse
        is a DuckDB file there, or the PostgreSQL database ``postgres_uri``."""
        root.mkdir(parents=True)
        (root / "dagster_home").mkdir()
        return cls(
            root=root,
            config=root / "databases.yaml",
            duckdb_path=root / "warehouse.duckdb",
            pipelines_dir=root / "pipelines",
            postgres_uri=postgres_uri,
        )

    def enter(self, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch) -> Project:
        """Points the environment (as users set it) at this project and the stand-in, and works in the folder."""
        monkeypatch.setenv("MONGODB_URI", standin.uri)
        monkeypatch.setenv("MONGODB_DLT_CONFIG", str(self.config))
        monkeypatch.setenv("MONGODB_DLT_PIPELINES_DIR", str(self.pipelines_dir))
        monkeypatch.setenv("DAGSTER_HOME", str(self.root / "dagster_home"))
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(self.root)
        return self


@pytest.fixture
def project(tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch) -> Project:
    return Project.create(tmp_path / "project").enter(standin, monkeypatch)


@pytest.fixture
def instance(project: Project) -> Iterator[dg.DagsterInstance]:
    # Launched runs start at once in a subprocess, as with `dagster dev` (no queue daemon in tests).
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
    with dg.instance_for_test(temp_dir=str(project.root / "dagster_home"), overrides=overrides) as dagster_instance:
        yield dagster_instance
