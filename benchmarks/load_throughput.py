"""Documents per second and peak memory of loading the sample collections through the real loader.

The MongoDB stand-in runs in a child process (`python -m mongodb_dlt.testing --scale N`), so the figures are the
loader's own: pymongo over a socket -> our dlt source -> normalize -> DuckDB.

    .venv/bin/python benchmarks/load_throughput.py [--scale 20] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader

CONFIG = """
defaults:
  connection_url: ${{MONGODB_URI}}
  batch_size: {batch_size}
destination: {{type: duckdb, path: {duckdb}}}
databases:
  sample_mflix: [comments, movies, users]
  sample_analytics: [accounts, transactions, customers]
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=20.0, help="sample data factor (1.0 = 3,900 documents)")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "mongodb_dlt.testing", "--scale", str(args.scale)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        os.environ["MONGODB_URI"] = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "databases.yaml"
            path.write_text(CONFIG.format(batch_size=args.batch_size, duckdb=Path(tmp) / "bench.duckdb"))
            config = load_config(path)
            loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(Path(tmp) / "pipelines"))
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            total_rows, started = 0, time.perf_counter()
            print(f"{'collection':<32} {'rows':>8} {'child rows':>10} {'seconds':>8} {'rows/s':>8}")
            for database in config.databases.values():
                for collection in database.collections.values():
                    result = loader.load_collection(collection, database.dataset)
                    assert result.succeeded, result.error
                    total_rows += result.rows_loaded
                    print(f"{database.name + '.' + collection.name:<32} {result.rows_loaded:>8} "
                          f"{sum(result.child_tables.values()):>10} {result.duration_seconds:>8.2f} "
                          f"{result.rows_loaded / result.duration_seconds:>8.0f}")
            elapsed = time.perf_counter() - started
            rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"total: {total_rows} documents in {elapsed:.1f} s ({total_rows / elapsed:.0f} documents/s)")
    print(f"peak RSS of the loading process: {rss_peak:.0f} MiB (before loading: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
