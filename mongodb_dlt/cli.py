"""``mongodb-dlt validate | demo | discover``: plain argparse, heavy imports only inside the command that needs them."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from mongodb_dlt.config import (
    ConfigError,
    ProjectConfig,
    config_path,
    load_config,
    mask_secrets,
    mask_url,
    resolve_env,
)

DEMO_CONFIG = "demo_databases.yaml"
DEMO_DUCKDB = "mongodb_dlt_demo.duckdb"
DEMO_STATE_DIR = ".mongodb_dlt_demo"
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _describe(config: ProjectConfig) -> str:
    from mongodb_dlt.factory import asset_key, op_name

    destination = config.destination
    where = destination.path or destination.project or ""
    out = [f"{config.path}: valid", f"destination: {destination.type}{f' ({where})' if where else ''}", ""]
    for database in config.databases.values():
        out.append(
            f"database {database.name}: op {op_name(database)}, dataset {database.dataset}, "
            f"connection {mask_url(database.connection_url)}, "
            f"{database.max_parallel_collections} in parallel, schedule {database.schedule or 'none'}"
        )
        rows = []
        for collection in database.collections.values():
            how = collection.write_disposition
            if collection.write_disposition == "merge":
                how += f" on {', '.join(collection.primary_key)}"
            if collection.incremental:
                how += f", incremental on {collection.incremental.cursor_field}"
            rows.append(
                (collection.name, asset_key(database, collection).to_user_string(),
                 f"{database.dataset}.{collection.table_name}", how)
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
    import pymongo

    uri = args.uri or os.environ.get("MONGODB_URI")
    if not uri:
        print("error: give --uri or set MONGODB_URI", file=sys.stderr)
        return 2
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=args.timeout * 1000)
    try:
        names = [args.database] if args.database else sorted(
            n for n in client.list_database_names() if n not in SYSTEM_DATABASES
        )
        snippet = ["databases:"]
        for name in names:
            collections = sorted(
                c for c in client[name].list_collection_names() if not c.startswith("system.")
            )
            print(f"# {name}: {len(collections)} collection(s)", file=sys.stderr)
            for collection in collections:
                count = client[name][collection].estimated_document_count()
                print(f"#   {collection}: ~{count} documents", file=sys.stderr)
            snippet.append(f"  {name}: [{', '.join(collections)}]")
    except pymongo.errors.PyMongoError as error:
        print(f"error: cannot list {mask_url(uri)}: {mask_secrets(str(error))}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print("\n".join(snippet))
    return 0


def demo(args: argparse.Namespace) -> int:
    from mongodb_dlt.testing import MongoStandIn, populate_sample_data

    workdir = Path.cwd()
    duckdb_file = workdir / DEMO_DUCKDB
    state_dir = workdir / DEMO_STATE_DIR
    # The stand-in's data is new on every start, so the demo starts from an empty warehouse each time.
    for leftover in (duckdb_file, duckdb_file.with_suffix(".duckdb.wal")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    demo_config = Path(str(files("mongodb_dlt").joinpath(DEMO_CONFIG)))

    with MongoStandIn() as standin:
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
        if args.serve:
            return _serve(state_dir)
        return _run_demo(demo_config, duckdb_file)


def _serve(state_dir: Path) -> int:
    dagster_home = state_dir / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    dagster = Path(sys.executable).with_name("dagster")
    print("Starting `dagster dev`; open http://127.0.0.1:3000 and materialize any asset. Ctrl-C stops both.")
    try:
        return subprocess.call([str(dagster), "dev", "-m", "mongodb_dlt.definitions"])
    except KeyboardInterrupt:
        return 0


def _run_demo(demo_config: Path, duckdb_file: Path) -> int:
    import time

    import dagster as dg

    from mongodb_dlt.definitions import ALL_COLLECTIONS_JOB, build_definitions

    started = time.monotonic()
    defs = build_definitions(load_config(demo_config))
    job = defs.resolve_job_def(ALL_COLLECTIONS_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
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
    parser = argparse.ArgumentParser(prog="mongodb-dlt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_validate = commands.add_parser("validate", help="check the YAML and print what it will create")
    p_validate.add_argument("--config", type=Path, default=None, help=f"default: {config_path()}")
    p_validate.set_defaults(handler=validate)

    p_demo = commands.add_parser("demo", help="load sample data from a local MongoDB stand-in into DuckDB")
    p_demo.add_argument("--serve", action="store_true", help="keep the stand-in up and start `dagster dev`")
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
