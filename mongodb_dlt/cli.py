"""``mongodb-dlt validate | demo | discover``: plain argparse, heavy imports only inside the command that needs them."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path

import pymongo  # already imported by mongodb_dlt.errors

from mongodb_dlt.config import ProjectConfig, config_path, load_config, resolve_env
from mongodb_dlt.errors import ConfigError, describe_error, mask_secrets, mask_url

DEMO_CONFIG = "demo_databases.yaml"
DEMO_DUCKDB = "mongodb_dlt_demo.duckdb"
DEMO_STATE_DIR = ".mongodb_dlt_demo"
DEMO_PORT = 3000
# How long `dagster dev` gets to stop its webserver, daemon and code servers before what is left is killed.
SERVE_STOP_SECONDS = 30.0
SERVE_KILL_SECONDS = 5.0
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})
STANDIN_PACKAGES = frozenset({"mongomock", "mockupdb"})

DESCRIPTION = """\
Load MongoDB collections into a warehouse (DuckDB, BigQuery, any dlt destination) as Dagster assets:
one multi-asset per database and one asset per collection, generated from a YAML map."""

EPILOG = """\
examples:
  mongodb-dlt validate                  what config/databases.yaml creates, or exactly what is wrong with it
  mongodb-dlt discover --uri URI        a YAML snippet listing the server's databases and collections
  mongodb-dlt demo                      sample data from a local MongoDB stand-in into DuckDB, in this folder
  mongodb-dlt demo --serve --port 3000  the same, then `dagster dev` on it; Ctrl-C or SIGTERM stops both
  dagster dev                           the UI over your YAML's assets (pyproject.toml names the definitions)

environment:
  MONGODB_DLT_CONFIG         path of the YAML (default: config/databases.yaml)
  MONGODB_URI                default connection URL (${MONGODB_URI} in the YAML)
  MONGODB_DLT_PIPELINES_DIR  dlt working folder (default: .mongodb_dlt/pipelines)
  DESTINATION__...           dlt destination credentials

The demo's MongoDB stand-in needs the demo extra, and --serve (dagster dev) the ui extra:
pip install 'mongodb-dlt[demo,ui]'."""


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _describe(config: ProjectConfig) -> str:
    from mongodb_dlt.naming import MongoDltTranslator, database_job_name, root_table, schedule_name

    translator = MongoDltTranslator()

    destination = config.destination
    where = destination.path or destination.project or ""
    out = [f"{config.path}: valid", f"destination: {destination.type}{f' ({where})' if where else ''}", ""]
    for database in config.databases.values():
        schedule = (
            f"schedule {schedule_name(database.op_name)} of job {database_job_name(database.op_name)} "
            f"({database.schedule})"
            if database.schedule
            else "no schedule"
        )
        out.append(
            f"database {database.name}: op {database.op_name}, dataset {database.dataset}, "
            f"connection {mask_url(database.connection_url)}, "
            f"{database.max_parallel_collections} in parallel, {schedule}"
        )
        rows = []
        for collection in database.collections.values():
            how = collection.write_disposition
            if collection.merges:
                how += f" on {', '.join(collection.primary_key)}"
            if collection.incremental:
                how += f", incremental on {collection.incremental.cursor_field}"
            rows.append(
                (collection.name, "/".join(translator.asset_key(database, collection)),
                 f"{database.dataset}.{root_table(collection.table_name)}", how)
            )
        out.append(_table(rows, ("collection", "asset key", "table", "load")))
        out.append("")
    total = sum(len(d.collections) for d in config.databases.values())
    out.append(f"{len(config.databases)} database(s), {total} collection(s)")
    return "\n".join(out)


def _unresolved_variables(config: ProjectConfig) -> list[str]:
    problems = []
    for database in config.databases.values():
        try:
            resolve_env(database.connection_url, where=f"databases.{database.name}.connection_url")
        except ConfigError as error:
            problems.append(str(error))
    return problems


def validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(_describe(config))
    for warning in _unresolved_variables(config):
        print(f"warning: {warning} (runs will fail until it is set)", file=sys.stderr)
    return 0


def discover(args: argparse.Namespace) -> int:
    uri = args.uri or os.environ.get("MONGODB_URI")
    if not uri:
        print("error: give --uri or set MONGODB_URI", file=sys.stderr)
        return 2
    client: pymongo.MongoClient | None = None
    try:
        # Inside the try: the client parses the URL (and looks a mongodb+srv:// name up) as it is made.
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=args.timeout * 1000)
        names = [args.database] if args.database else _database_names(client)
        listed = {name: _collections(client, name) for name in names}
        if args.database and not listed[args.database]:
            print(
                f"error: database {args.database!r} on {mask_url(uri)} has no collections: it does not exist, or "
                f"holds none yet{_databases_there(client)}",
                file=sys.stderr,
            )
            return 1
    except pymongo.errors.PyMongoError as error:
        problem = str(error) if isinstance(error, pymongo.errors.ConnectionFailure) else describe_error(error)
        print(f"error: cannot list {mask_url(uri)}: {mask_secrets(problem)}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    snippet = ["databases:"]
    for name, collections in listed.items():
        print(f"# {name}: {len(collections)} collection(s)", file=sys.stderr)
        for collection, count in collections.items():
            print(f"#   {collection}: ~{count} documents", file=sys.stderr)
        if collections:
            snippet.append(f"  {name}: [{', '.join(collections)}]")
        else:
            print("#   left out: it has no collection to load", file=sys.stderr)
    if len(snippet) == 1:
        print(f"error: {mask_url(uri)} has no database with a collection to load", file=sys.stderr)
        return 1
    print("\n".join(snippet))
    return 0


def _database_names(client: pymongo.MongoClient) -> list[str]:
    return sorted(name for name in client.list_database_names() if name not in SYSTEM_DATABASES)


def _collections(client: pymongo.MongoClient, database: str) -> dict[str, int]:
    """The collections of ``database`` (system ones left out) and their estimated document counts."""
    names = sorted(name for name in client[database].list_collection_names() if not name.startswith("system."))
    return {name: client[database][name].estimated_document_count() for name in names}


def _databases_there(client: pymongo.MongoClient) -> str:
    """``; databases there: a, b`` where the user may list the server's databases, else nothing."""
    try:
        return f"; databases there: {', '.join(_database_names(client)) or 'none'}"
    except pymongo.errors.OperationFailure:  # rights on one database do not include listing the others
        return ""
def demo(args: argparse.Namespace) -> int:
    try:
        from mongodb_dlt.testing import MongoStandIn, populate_sample_data
    except ModuleNotFoundError as error:
        if (problem := missing_standin_package(error)) is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2

    if args.serve and importlib.util.find_spec("dagster_webserver") is None:
        print(
            "error: --serve starts `dagster dev`, which needs Dagster's webserver (dagster-webserver is not "
            "installed): pip install 'mongodb-dlt[demo,ui]'",
            file=sys.stderr,
        )
        return 2

    workdir = Path.cwd()
    duckdb_file = workdir / DEMO_DUCKDB
    state_dir = workdir / DEMO_STATE_DIR
    # The stand-in's data is new on every start, so the demo starts from an empty warehouse each time.
    for leftover in (duckdb_file, duckdb_file.with_suffix(".duckdb.wal")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    demo_config = Path(str(files("mongodb_dlt").joinpath(DEMO_CONFIG)))

    with _interruptible(), MongoStandIn() as standin:
        counts = populate_sample_data(standin.client, scale=args.scale)
        env = {
            "MONGODB_URI": standin.uri,
            "ANALYTICS_MONGODB_URI": standin.uri,
            "MONGODB_DLT_CONFIG": str(demo_config),
            "MONGODB_DLT_DEMO_DUCKDB": str(duckdb_file),
            "MONGODB_DLT_PIPELINES_DIR": str(state_dir / "pipelines"),
        }
        os.environ.update(env)
        documents = sum(sum(c.values()) for c in counts.values())
        print(f"MongoDB stand-in on {standin.uri} with {documents} sample documents")
        try:
            if not args.serve:
                return _run_demo(demo_config, duckdb_file, dagster_home=None)
            dagster_home = state_dir / "dagster_home"
            dagster_home.mkdir(parents=True, exist_ok=True)
            (dagster_home / "dagster.yaml").touch()  # Dagster's defaults, without its warning that the file is missing
            os.environ["DAGSTER_HOME"] = str(dagster_home)
            # Loaded into the instance `dagster dev` then serves, so the UI opens on materialized assets.
            _run_demo(demo_config, duckdb_file, dagster_home=dagster_home)
            return _serve(args.port)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


def missing_standin_package(error: ModuleNotFoundError) -> str | None:
    """What to install when ``error`` is a package of the MongoDB stand-in (the demo extra) missing, else None."""
    if (error.name or "").partition(".")[0] not in STANDIN_PACKAGES:
        return None
    return (
        f"the demo's MongoDB stand-in needs the demo extra ({error.name} is not installed): "
        "pip install 'mongodb-dlt[demo]'"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_interrupt_signals() -> None:
    # Also when started with SIGINT ignored (`mongodb-dlt demo --serve &` in a script): a Dagster run maps SIGTERM to
    # SIGINT's handler when it ends, and `dagster dev` inherits an ignored SIGINT and then ignores SIGTERM as well.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM unwind the demo: the load stops, `dagster dev` stops, the stand-in closes."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    _stop_on_interrupt_signals()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(port: int) -> int:
    dagster = Path(sys.executable).with_name("dagster")
    print(
        f"Starting `dagster dev`; open http://127.0.0.1:{port} and materialize any asset. Ctrl-C stops both.",
        flush=True,
    )
    _stop_on_interrupt_signals()
    # A process group of its own: stopping the demo stops its webserver, daemon, code servers and runs too.
    process = subprocess.Popen(
        [str(dagster), "dev", "-m", "mongodb_dlt.definitions", "--port", str(port)], start_new_session=True
    )
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Lets `dagster dev` shut its services down, then ends whatever is left of its process group."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # `dagster dev` handles it as Ctrl-C
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=SERVE_STOP_SECONDS)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + SERVE_KILL_SECONDS
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
                while time.monotonic() < deadline:
                    time.sleep(0.1)
                    os.killpg(process.pid, 0)  # raises once no process of the group is left
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=SERVE_KILL_SECONDS)


def _run_demo(demo_config: Path, duckdb_file: Path, dagster_home: Path | None) -> int:
    import dagster as dg

    from mongodb_dlt.definitions import ALL_COLLECTIONS_JOB, build_definitions

    started = time.monotonic()
    defs = build_definitions(load_config(demo_config))
    job = defs.resolve_job_def(ALL_COLLECTIONS_JOB)
    instance_context = dg.DagsterInstance.get() if dagster_home else dg.DagsterInstance.ephemeral()
    with instance_context as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    rows = []
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = materialization.metadata
        tables = 1 + len(metadata["child_tables"].value)
        rows.append(
            (materialization.asset_key.to_user_string(), metadata["rows_loaded"].value, tables,
             f"{metadata['duration_seconds'].value:.2f}")
        )
    print(_table(sorted(rows), ("asset", "rows", "tables", "seconds")))
    print(f"\nDuckDB file: {duckdb_file}  ({time.monotonic() - started:.1f}s in all)")
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            print(f"failed: {event.step_failure_data.error.message.strip()}", file=sys.stderr)
    return 0 if result.success else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mongodb-dlt",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    p_validate = commands.add_parser("validate", help="check the YAML and print what it will create")
    p_validate.add_argument("--config", type=Path, default=None, help=f"default: {config_path()}")
    p_validate.set_defaults(handler=validate)

    p_demo = commands.add_parser("demo", help="load sample data from a local MongoDB stand-in into DuckDB")
    p_demo.add_argument(
        "--serve", action="store_true", help="after loading, keep the stand-in up and start `dagster dev` on it"
    )
    p_demo.add_argument(
        "--port", type=int, default=DEMO_PORT, help=f"with --serve: the webserver's port (default {DEMO_PORT})"
    )
    p_demo.add_argument("--scale", type=float, default=1.0, help="sample data size factor (default 1.0)")
    p_demo.set_defaults(handler=demo)

    p_discover = commands.add_parser("discover", help="list a live server's collections as a YAML snippet")
    p_discover.add_argument("--uri", default=None, help="MongoDB URI (default: env MONGODB_URI)")
    p_discover.add_argument("--database", default=None, help="only this database")
    p_discover.add_argument("--timeout", type=int, default=10, help="seconds to wait for the server")
    p_discover.set_defaults(handler=discover)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
