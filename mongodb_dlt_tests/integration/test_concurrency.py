"""Around a run: other processes holding the DuckDB file, two processes on one collection, two projects on
one machine. Real subprocesses hold the locks; nothing depends on a sleep hitting the right instant."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest

from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.locking import collection_lock
from mongodb_dlt.naming import pipeline_name
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project

# Opens the DuckDB file read-only (as an analyst's notebook does), prints "ready", and keeps it open until a line
# arrives on stdin; with "--poll", opens it for one short query every 0.5 s until stdin closes instead.
READER = textwrap.dedent(
    """
    import sys, threading, time, duckdb
    path = sys.argv[1]
    if sys.argv[2:] == ["--poll"]:
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        print("ready", flush=True)
        while not stop.is_set():
            with duckdb.connect(path, read_only=True) as connection:
                connection.execute("SELECT count(*) FROM information_schema.tables").fetchall()
                time.sleep(0.2)
            time.sleep(0.5)
    else:
        connection = duckdb.connect(path, read_only=True)
        print("ready", flush=True)
        sys.stdin.readline()
    """
)


def reader(path: Path, *flags: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def setup(project: Project, standin: MongoStandIn, destination: str = "{type: duckdb, path: \"{duckdb}\"}"):
    standin.client.shop.orders.insert_many([{"_id": i, "items": [{"k": i}]} for i in range(30)])
    project.write_config(
        f"""
        defaults: {{retries: {{max_attempts: 1}}}}
        destination: {destination}
        databases:
          shop: [orders]
        """
    )
    config = load_config(project.config)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))
    return loader, config.databases["shop"].collections["orders"]


def test_a_readers_lock_is_waited_for_and_the_holder_is_logged(
    project: Project, standin: MongoStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    loader, orders = setup(project, standin)
    assert loader.load_collection(orders, "mongo_shop").succeeded  # the file exists for the reader to open
    holder = reader(project.duckdb_path)
    assert holder.stdin is not None

    def release_when_waited_for() -> None:
        # lets go of the file once the loader has said that it waits for it
        while not any("waiting for DuckDB file" in r.getMessage() for r in list(caplog.records)):
            threading.Event().wait(0.05)
        holder.stdin.write("done\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]

    releaser = threading.Thread(target=release_when_waited_for, daemon=True)
    with caplog.at_level(logging.INFO):
        releaser.start()
        result = loader.load_collection(orders, "mongo_shop", logging.getLogger("load"))
    holder.wait(timeout=30)
    assert result.succeeded, result.error
    waits = [r.getMessage() for r in caplog.records if "waiting for DuckDB file" in r.getMessage()]
    assert f"locked by PID {holder.pid}" in waits[0]
    assert project.scalar("SELECT count(*) FROM mongo_shop.orders") == 30


def test_a_lock_held_past_the_bound_fails_before_the_extract_naming_the_holder(
    project: Project, standin: MongoStandIn
) -> None:
    loader, orders = setup(project, standin, "{type: duckdb, path: \"{duckdb}\", lock_timeout: 1}")
    assert loader.load_collection(orders, "mongo_shop").succeeded
    standin.clear_commands()
    holder = reader(project.duckdb_path)
    try:
        result = loader.load_collection(orders, "mongo_shop")
    finally:
        holder.communicate("done\n", timeout=30)
    assert not result.succeeded
    error = result.error or ""
    assert f"locked by PID {holder.pid}" in error and "lock_timeout: 1 s" in error and str(project.duckdb_path) in error
    assert "credentials" not in error and "internet" not in error
    assert not standin.commands_seen("shop", "orders"), "the warehouse is checked before MongoDB is read"


def test_short_queries_from_another_process_do_not_fail_loads(project: Project, standin: MongoStandIn) -> None:
    loader, orders = setup(project, standin)
    assert loader.load_collection(orders, "mongo_shop").succeeded
    poller = reader(project.duckdb_path, "--poll")
    try:
        for _ in range(3):
            result = loader.load_collection(orders, "mongo_shop")
            assert result.succeeded, result.error
    finally:
        poller.communicate("", timeout=30)
    assert project.scalar("SELECT count(*) FROM mongo_shop.orders") == 30


def test_an_unwritable_warehouse_fails_before_the_extract(project: Project, standin: MongoStandIn) -> None:
    (project.root / "not_a_folder").write_text("")
    loader, orders = setup(project, standin, f"{{type: duckdb, path: {project.root / 'not_a_folder' / 'w.duckdb'}}}")
    result = loader.load_collection(orders, "mongo_shop")
    assert not result.succeeded
    assert "not_a_folder" in (result.error or "") and "cannot open DuckDB file" in (result.error or "")
    assert not standin.commands_seen("shop", "orders")


def test_a_second_process_on_the_same_collection_gets_a_clear_message(
    project: Project, standin: MongoStandIn
) -> None:
    loader, orders = setup(project, standin)
    lock_file = loader.destination.working_dir / f"{pipeline_name(orders.database, orders.name)}.lock"
    # another process holds the collection: the lock dies with it, so hold it from a real child process
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from mongodb_dlt.load.locking import collection_lock
            with collection_lock(Path({str(lock_file)!r}), "shop.orders", run_id="run-1234"):
                print("ready", flush=True)
                sys.stdin.readline()
            """
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    try:
        busy = loader.load_collection(orders, "mongo_shop")
    finally:
        holder.communicate("done\n", timeout=30)
    assert not busy.succeeded and busy.attempts == 1
    assert f"PID {holder.pid}" in (busy.error or "") and "run-1234" in (busy.error or "")
    assert "being loaded by another process" in (busy.error or "")
    assert not standin.commands_seen("shop", "orders")

    # the holder is gone, and so is its lock
    assert loader.load_collection(orders, "mongo_shop").succeeded


def test_a_killed_holder_never_leaves_its_lock_behind(tmp_path: Path) -> None:
    lock_file = tmp_path / "orders.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path\nfrom mongodb_dlt.load.locking import collection_lock\n"
         f"with collection_lock(Path({str(lock_file)!r}), 'x'):\n    print('ready', flush=True)\n"
         f"    import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    holder.kill()
    holder.wait()
    with collection_lock(lock_file, "x"):
        pass


def test_two_projects_on_one_machine_keep_their_own_warehouse_and_state(
    tmp_path: Path, standin: MongoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same YAML in two project folders, loaded one after the other from each, with dlt's folders left to
    their defaults: each warehouse holds every document, and nothing lands in the other project."""
    monkeypatch.delenv("MONGODB_DLT_PIPELINES_DIR", raising=False)
    monkeypatch.setenv("MONGODB_URI", standin.uri)
    standin.client.shop.events.insert_many([{"_id": i, "seq": i} for i in range(25)])
    counts = {}
    for name in ("a", "b"):
        root = tmp_path / name
        (root / "config").mkdir(parents=True)
        (root / "config" / "databases.yaml").write_text(
            "destination: {type: duckdb, path: data/warehouse.duckdb}\n"
            "databases:\n  shop:\n    collections:\n"
            "      events: {incremental: {cursor_field: seq}, write_disposition: append}\n"
        )
        monkeypatch.chdir(root)
        config = load_config()
        loader = MongoDltLoader.from_config(config.destination)
        result = loader.load_collection(config.databases["shop"].collections["events"], "mongo_shop")
        assert result.succeeded, result.error
        with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as connection:
            counts[name] = connection.execute("SELECT count(*) FROM mongo_shop.events").fetchone()[0]
        assert Path(loader.destination.pipelines_dir).is_relative_to(root)
    assert counts == {"a": 25, "b": 25}
    assert sorted(os.listdir(tmp_path / "a" / "data")) == ["warehouse.duckdb"]
