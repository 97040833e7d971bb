"""The console script: validate, discover, demo.

The two demos (a load, and a load then `dagster dev`) are started with the module's first test (``demos``), each in
an empty folder of its own, and run while the other tests run; their tests then check them as they did when they
started them themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import mongomock
import pytest

from mongodb_dlt.cli import main
from mongodb_dlt.testing import MongoStandIn, populate_sample_data

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "databases.yaml"
DEMO_TEST = "test_demo_loads_the_sample_databases_into_duckdb_in_an_empty_folder"
SERVE_TEST = "test_demo_serve_loads_then_serves_on_its_port_and_sigterm_stops_the_whole_tree"
READS_PROC = Path("/proc/self/stat").exists()


@dataclass
class Demo:
    """A demo started ahead of its test: the process, its working folder (empty when it started) and its logs."""

    process: subprocess.Popen[bytes]
    folder: Path
    out: Path
    err: Path
    port: int = 0

    @classmethod
    def start(cls, folder: Path, logs: Path, *args: str, port: int = 0) -> Demo:
        out, err = logs / "out.log", logs / "err.log"
        with out.open("w") as out_file, err.open("w") as err_file:
            process = subprocess.Popen(args, cwd=folder, stdout=out_file, stderr=err_file)
        return cls(process, folder, out, err, port)

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        self.process.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, self.out.read_text(),
                                           self.err.read_text())


@pytest.fixture(scope="module")
def demos(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Demo]]:
    """The selected demos, started at once: ``demo --scale 0.2`` (its logs beside its folder, which stays as the
    demo leaves it), and ``demo --serve`` on a free port (its logs in its folder, as users run it)."""
    selected = {item.name for item in request.session.items if item.module is request.module}
    started: dict[str, Demo] = {}
    if DEMO_TEST in selected:
        folder = tmp_path_factory.mktemp("demo")
        (folder / "work").mkdir()
        started["demo"] = Demo.start(
            folder / "work", folder, sys.executable, "-m", "mongodb_dlt.cli", "demo", "--scale", "0.2"
        )
    if SERVE_TEST in selected and READS_PROC:
        folder, port = tmp_path_factory.mktemp("serve"), _free_port()
        console_script = Path(sys.executable).with_name("mongodb-dlt")
        started["serve"] = Demo.start(
            folder, folder, str(console_script), "demo", "--serve", "--port", str(port), "--scale", "0.05", port=port
        )
    yield started
    for demo in started.values():  # a test that failed early may have left its demo running
        _stop_tree(demo.process)


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


def test_validate_refuses_a_password_written_into_the_yaml_without_printing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(
        "defaults:\n  connection_url: mongodb://etl:Pa55word@db.internal:27017/\ndatabases:\n  shop: [orders]\n"
    )
    assert main(["validate", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Pa55word" not in captured.out + captured.err
    assert f"{path}, line 2, key defaults.connection_url: holds a literal password" in captured.err


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


def test_discover_says_a_database_without_collections_cannot_be_loaded(
    standin: MongoStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.client.shop.orders.insert_one({"n": 1})
    assert main(["discover", "--uri", standin.uri, "--database", "nosuchdb"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: database 'nosuchdb' on {standin.uri} has no collections: it does not exist, or holds none yet; "
        "databases there: shop\n"
    )


def test_discover_reports_an_unreachable_server_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--uri", "mongodb://u:TopSecret@127.0.0.1:9/?connectTimeoutMS=200", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot list mongodb://u:****@127.0.0.1:9/" in err and "TopSecret" not in err


def test_demo_loads_the_sample_databases_into_duckdb_in_an_empty_folder(demos: dict[str, Demo]) -> None:
    demo = demos["demo"]  # `mongodb-dlt demo --scale 0.2`, started in an empty folder with the module
    tmp_path = demo.folder
    done = demo.result(timeout=300)
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


def test_help_tells_users_what_it_does_and_which_environment_it_reads() -> None:
    console_script = Path(sys.executable).with_name("mongodb-dlt")
    done = subprocess.run([str(console_script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:4] == [
        "usage: mongodb-dlt [-h] COMMAND ...",
        "",
        "Load MongoDB collections into a warehouse (DuckDB, BigQuery, any dlt destination) as Dagster assets:",
        "one multi-asset per database and one asset per collection, generated from a YAML map.",
    ]
    for command in ("validate", "demo", "discover"):
        assert f"\n    {command}  " in done.stdout
    for variable in ("MONGODB_DLT_CONFIG", "MONGODB_URI", "MONGODB_DLT_PIPELINES_DIR"):
        assert f"\n  {variable} " in done.stdout
    assert "pip install 'mongodb-dlt[demo,ui]'" in done.stdout


RUNTIME_IMPORTS = """
import importlib, pkgutil, sys
import mongodb_dlt
def modules(package):  # every module under package, without importing mongodb_dlt.testing to find them
    for m in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        if m.name != "mongodb_dlt.testing":
            yield m.name
            if m.ispkg:
                yield from modules(importlib.import_module(m.name))
runtime = list(modules(mongodb_dlt))
for name in runtime:
    importlib.import_module(name)
from mongodb_dlt.config import load_config
from mongodb_dlt.definitions import build_definitions
build_definitions(load_config(sys.argv[1]))
print(" ".join(runtime))
print(" ".join(sorted(m for m in sys.modules if m.partition(".")[0] in ("mongomock", "mockupdb", "mongodb_dlt"))))
"""


def test_runtime_modules_never_import_the_standin_packages() -> None:
    # A fresh interpreter: this one has imported the stand-in for the tests.
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_IMPORTS, str(REPO_CONFIG)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MONGODB_URI": "mongodb://db.invalid/"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runtime_line, imported_line = done.stdout.splitlines()[-2:]
    assert {"mongodb_dlt.definitions", "mongodb_dlt.load.loader", "mongodb_dlt.factory", "mongodb_dlt.cli"} <= set(
        runtime_line.split()
    )
    imported = imported_line.split()
    assert not [name for name in imported if not name.startswith("mongodb_dlt")], imported
    assert "mongodb_dlt.testing" not in imported


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("from mongodb_dlt.cli import main; sys.exit(main(['demo']))", id="mongodb-dlt demo"),
        pytest.param(
            "import runpy; sys.argv = ['python -m mongodb_dlt.testing']; "
            "runpy.run_module('mongodb_dlt.testing', run_name='__main__', alter_sys=True)",
            id="python -m mongodb_dlt.testing",
        ),
    ],
)
def test_the_stand_in_without_the_demo_extra_names_the_install_command(tmp_path: Path, command: str) -> None:
    # None in sys.modules makes `import mongomock` fail as it does where the extra is not installed.
    script = f"import sys; sys.modules['mongomock'] = None; {command}"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        "error: the demo's MongoDB stand-in needs the demo extra (mongomock is not installed): "
        "pip install 'mongodb-dlt[demo]'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_demo_serve_without_the_webserver_names_the_install_command(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['dagster_webserver'] = None; from mongodb_dlt.cli import main; "
        "sys.exit(main(['demo', '--serve']))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        "error: --serve starts `dagster dev`, which needs Dagster's webserver (dagster-webserver is not installed): "
        "pip install 'mongodb-dlt[demo,ui]'\n"
    )
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _live_descendants(root: int) -> set[int]:
    """Processes below ``root`` that have not exited (zombies count as exited), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, _, rest = stat.read_text().partition(" (")
            state, ppid = rest.rpartition(") ")[2].split()[:2]
        except OSError:
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[0] != "Z"
    except OSError:
        return False


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def _stop_tree(cli: subprocess.Popen[bytes]) -> None:
    """Ends ``cli`` and every process below it: SIGTERM first (the demo stops its tree), then SIGKILL."""
    if cli.poll() is None:
        tree = _live_descendants(cli.pid)
        cli.send_signal(signal.SIGTERM)
        try:
            cli.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cli.kill()
            cli.wait(timeout=10)
        for pid in tree:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not READS_PROC, reason="reads the process tree from /proc")
def test_demo_serve_loads_then_serves_on_its_port_and_sigterm_stops_the_whole_tree(demos: dict[str, Demo]) -> None:
    # `mongodb-dlt demo --serve --port <free port> --scale 0.05`, started in an empty folder with the module
    demo = demos["serve"]
    cli, port, tmp_path = demo.process, demo.port, demo.folder
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while True:
            assert cli.poll() is None, (tmp_path / "err.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the webserver did not answer within 90 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        tree = _live_descendants(cli.pid)
        assert len(tree) >= 3  # dagster dev, its webserver and daemon at least

        # Loaded before serving, into the instance the UI shows.
        assert "raw_sample_mflix/movies" in (tmp_path / "out.log").read_text()
        nodes = _graphql(
            port, "{ assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId } } }"
        )["assetNodes"]
        materialized = {"/".join(node["assetKey"]["path"]) for node in nodes if node["assetMaterializations"]}
        assert "raw_sample_mflix/movies" in materialized and len(materialized) == 7

        stopping = time.monotonic()
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        while {pid for pid in tree if _alive(pid)} and time.monotonic() < stopping + 60:
            time.sleep(0.2)
        assert not {pid for pid in tree if _alive(pid)}, "processes left running after SIGTERM"
    finally:  # on failure, end what this test started
        if cli.poll() is None:
            cli.kill()
        for pid in tree:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        cli.wait(timeout=10)
    with duckdb.connect(str(tmp_path / "mongodb_dlt_demo.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from mongo_sample_mflix.movies").fetchone()[0] > 0
