"""A backfill of 30 partitions into PostgreSQL against one unpartitioned load of the same documents, in one run.

A fast read-only MongoDB stand-in (benchmarks/fast_standin.py, a child process) serves ~700-byte nested orders from
memory, one document per second of ``created_at`` from 2024-01-01; PostgreSQL is the server the tests start
(mongodb_dlt_tests/postgres.py). Each repeat, interleaved, into a new dataset each time:

- **whole**: ``MongoDltLoader.load_collection`` of the ``orders`` collection, unpartitioned (merge), in this process;
- **backfill**: the same documents as 30 partitions of ``partitions: {by: created_at, every: hour, ...}``, each
  window loaded by ``load_collection(window=...)`` in a pool of ``--workers`` processes (as the run queue starts
  ``max_concurrent_runs`` runs, without Dagster's per-run start-up, which is the same for any run: about 4-8 s of
  imports per run process on our machines).

The stand-in has one document per second of ``created_at``, so 30 *daily* windows would need 2.6M documents: the
windows here are hours (3,600 documents each), the same shape of work per partition at a size the machine holds.
Prints each side's median wall time and spread, and the ratio backfill / whole (target <= 1.5).

    .venv/bin/python benchmarks/partitions_backfill.py [--partitions 30] [--repeat 3] [--workers 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))

from mongodb_dlt.config import load_config  # noqa: E402
from mongodb_dlt.extract.mongo import Window  # noqa: E402
from mongodb_dlt.load.loader import MongoDltLoader  # noqa: E402
from mongodb_dlt_tests.postgres import CREDENTIALS_ENV, PostgresServer  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CONFIG = """\
defaults:
  connection_url: {uri}
  batch_size: 1000
destination: {{type: postgres}}
databases:
  bench:
    dataset: {dataset}
    collections:
      orders: {options}
"""


def config_file(folder: Path, uri: str, dataset: str, partitioned: bool) -> Path:
    options = '{partitions: {by: created_at, every: hour, start: "2024-01-01"}}' if partitioned else "{}"
    path = folder / f"{dataset}.yaml"
    path.write_text(CONFIG.format(uri=uri, dataset=dataset, options=options))
    return path


def load_window(config_path: str, pipelines_dir: str, hour: int) -> int:
    """One partition's load, in a worker process: what one backfill run does, less Dagster."""
    config = load_config(config_path)
    database = config.databases["bench"]
    collection = database.collections["orders"]
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=pipelines_dir)
    start = START + dt.timedelta(hours=hour)
    window = Window.of(start.strftime("%Y-%m-%d-%H:%M"), "created_at", start, start + dt.timedelta(hours=1), START)
    result = loader.load_collection(collection, database.dataset, window=window)
    if not result.succeeded:
        raise RuntimeError(result.error)
    return result.documents_read


def whole(config_path: Path, pipelines_dir: Path) -> tuple[float, int]:
    config = load_config(config_path)
    database = config.databases["bench"]
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(pipelines_dir))
    started = time.perf_counter()
    result = loader.load_collection(database.collections["orders"], database.dataset)
    if not result.succeeded:
        raise RuntimeError(result.error)
    return time.perf_counter() - started, result.documents_read


def backfill(config_path: Path, pipelines_dir: Path, partitions: int, pool: ProcessPoolExecutor) -> tuple[float, int]:
    started = time.perf_counter()
    read = sum(pool.map(load_window, [str(config_path)] * partitions, [str(pipelines_dir)] * partitions,
                        range(partitions)))
    return time.perf_counter() - started, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3, help="partitions loading at once (max_concurrent_runs)")
    args = parser.parse_args()
    documents = args.partitions * 3600

    standin = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / "fast_standin.py"), "--documents", str(documents), "--small", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    uri = standin.stdout.readline().strip()  # type: ignore[union-attr]
    server = PostgresServer.start()
    times: dict[str, list[float]] = {"whole": [], "backfill": []}
    try:
        with tempfile.TemporaryDirectory(prefix="partitions_bench_") as temp, ProcessPoolExecutor(args.workers) as pool:
            folder = Path(temp)
            for repeat in range(args.repeat):
                order = ("whole", "backfill") if repeat % 2 == 0 else ("backfill", "whole")
                for side in order:
                    os.environ[CREDENTIALS_ENV] = server.new_database(f"{side}{repeat}")
                    dataset = f"bench_{side}"
                    path = config_file(folder, uri, dataset, partitioned=side == "backfill")
                    pipelines = folder / f"pipelines_{side}_{repeat}"
                    if side == "whole":
                        seconds, read = whole(path, pipelines)
                    else:
                        seconds, read = backfill(path, pipelines, args.partitions, pool)
                    assert read == documents, (side, read, documents)
                    times[side].append(seconds)
                    print(f"repeat {repeat + 1} {side:>8}: {seconds:6.1f} s ({documents / seconds:,.0f} documents/s)",
                          flush=True)
    finally:
        server.stop()
        standin.terminate()
        standin.wait(timeout=30)

    print(f"\n{documents:,} documents; backfill: {args.partitions} partitions, {args.workers} at once")
    for side in ("whole", "backfill"):
        values = times[side]
        print(f"{side:>8}: median {statistics.median(values):.1f} s, spread {min(values):.1f}-{max(values):.1f} s")
    ratios = [b / w for b, w in zip(times["backfill"], times["whole"], strict=True)]
    print(f"backfill / whole: median {statistics.median(ratios):.2f}x (per repeat: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); target <= 1.5x")


if __name__ == "__main__":
    main()
