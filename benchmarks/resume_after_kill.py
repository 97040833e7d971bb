"""A kill -9 at 50% of a large snapshot, then a re-run: documents read in total and wall time, against an unkilled
load measured in the same run; and, with ``--chunk-sizes``, what one load package costs against the chunk size.

A fast read-only MongoDB stand-in (benchmarks/fast_standin.py, a child process) serves ~700-byte nested orders
from memory and counts the documents it sends (``benchStats``). Each load runs ``MongoDltLoader.load_collection``
(merge, DuckDB) in a child process of its own, into a fresh warehouse and working folder, without Dagster (whose
start-up would blur the ratios). Per repeat, interleaved:

1. an unkilled load of the collection: its wall time;
2. a load SIGKILLed from here once the stand-in has sent half the collection (polled every 0.1 s), then a re-run
   that reads on from the last committed chunk: documents sent over both runs / the collection, and the two runs'
   wall time / the unkilled load's.

``--chunk-sizes 32MB,128MB,512MB,none`` loads the collection once per chunk size (interleaved, ``--repeat`` times)
and prints each one's time and packages; the cost of a package is the slope of time over packages.

    .venv/bin/python benchmarks/resume_after_kill.py [--documents 2000000] [--chunk-size 512MB] [--repeat 1]
                                                     [--chunk-sizes 32MB,128MB,512MB,none]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arrow_throughput import DATABASE, StandIn

COLLECTION = "orders"
LOAD = """
import json, sys
from mongodb_dlt.config import load_config
from mongodb_dlt.load.loader import MongoDltLoader
config = load_config(sys.argv[1])
collection = config.databases[sys.argv[2]].collections[sys.argv[3]]
loader = MongoDltLoader.from_config(config.destination, pipelines_dir=sys.argv[4])
result = loader.load_collection(collection, config.databases[sys.argv[2]].dataset)
print(json.dumps({"error": result.error, "documents": result.documents_read, "chunks": result.chunks}))
"""


class Load:
    """One load in a child process, into the warehouse and working folder under ``folder``."""

    def __init__(self, folder: Path, uri: str, chunk_size: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.config = folder / "databases.yaml"
        chunk = "null" if chunk_size == "none" else chunk_size
        self.config.write_text(
            f"defaults: {{connection_url: '{uri}', chunk_size: {chunk}, retries: {{max_attempts: 1}}}}\n"
            f"destination: {{type: duckdb, path: '{folder / 'warehouse.duckdb'}'}}\n"
            f"databases:\n  {DATABASE}: [{COLLECTION}]\n"
        )

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", LOAD, str(self.config), DATABASE, COLLECTION, str(self.folder / "pipelines")],
            stdout=subprocess.PIPE, stderr=(self.folder / "load.log").open("a"), text=True,
            env={**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"},
        )

    def run(self) -> tuple[float, float, dict[str, object]]:
        """Loads to the end: (wall seconds, CPU seconds of the loading process and its reaped children, result)."""
        started = time.perf_counter()
        process = self.start()
        output, _ = process.communicate()
        elapsed = time.perf_counter() - started
        result = json.loads(output.strip().splitlines()[-1])
        if result["error"]:
            raise SystemExit(f"the load failed: {result['error']}; see {self.folder / 'load.log'}")
        return elapsed, _cpu_seconds(), result

    def run_killed(self, standin: StandIn, after_documents: int) -> float:
        """Loads until the stand-in has sent ``after_documents``, then SIGKILLs the load: its wall seconds."""
        started = time.perf_counter()
        process = self.start()
        while process.poll() is None:
            if _sent(standin) >= after_documents:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        process.wait()
        if process.returncode != -signal.SIGKILL:
            raise SystemExit(f"the load ended before the kill ({process.returncode}); see {self.folder / 'load.log'}")
        return time.perf_counter() - started


_cpu_before = [0.0]


def _cpu_seconds() -> float:
    usage = os.times()
    total = usage.children_user + usage.children_system
    spent, _cpu_before[0] = total - _cpu_before[0], total
    return spent


def _sent(standin: StandIn) -> int:
    return int(standin.command("benchStats")["collections"][COLLECTION]["served"])


def _reset(standin: StandIn) -> None:
    standin.command("benchStats", reset=True)


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g}, n={len(values)})"


def resume_after_kill(standin: StandIn, root: Path, documents: int, chunk_size: str, repeat: int) -> None:
    read_ratios, wall_ratios = [], []
    for number in range(repeat):
        _reset(standin)
        whole, whole_cpu, result = Load(root / f"whole{number}", standin.uri, chunk_size).run()
        print(f"unkilled: {whole:.1f} s wall, {whole_cpu:.1f} s CPU, {result['chunks']} chunks, "
              f"{_sent(standin):,} documents sent")
        _reset(standin)
        resumed = Load(root / f"killed{number}", standin.uri, chunk_size)
        killed = resumed.run_killed(standin, documents // 2)
        sent_before_kill = _sent(standin)
        again, again_cpu, result = resumed.run()
        sent = _sent(standin)
        print(f"killed at {sent_before_kill:,} documents sent after {killed:.1f} s; the re-run read "
              f"{result['documents']:,} in {result['chunks']} chunks, {again:.1f} s wall, {again_cpu:.1f} s CPU")
        read_ratios.append(sent / documents)
        wall_ratios.append((killed + again) / whole)
        print(f"  documents read in total / collection: {sent:,} / {documents:,} = {sent / documents:.3f}; "
              f"wall (killed + re-run) / unkilled: {wall_ratios[-1]:.2f}")
    print(f"documents read in total / collection: {spread(read_ratios)} (target <= 1.1)")
    print(f"wall time, killed + re-run / unkilled: {spread(wall_ratios)}")


def chunk_overhead(standin: StandIn, root: Path, documents: int, sizes: list[str], repeat: int) -> None:
    times: dict[str, list[float]] = {size: [] for size in sizes}
    chunks: dict[str, int] = {}
    for number in range(repeat):
        for size in sizes:
            elapsed, cpu, result = Load(root / f"{size}-{number}", standin.uri, size).run()
            times[size].append(elapsed)
            chunks[size] = max(int(result["chunks"]), 1)  # type: ignore[call-overload]
            print(f"chunk_size {size}: {elapsed:.1f} s wall, {cpu:.1f} s CPU, {chunks[size]} package(s)")
    print(f"{documents:,} documents:")
    base = statistics.median(times[sizes[-1]])
    for size in sizes:
        median = statistics.median(times[size])
        extra = chunks[size] - chunks[sizes[-1]]
        cost = f", {(median - base) / extra:.2f} s per extra package" if extra > 0 else ""
        print(f"  {size}: {spread(times[size])} s, {chunks[size]} packages{cost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=2_000_000)
    parser.add_argument("--chunk-size", default="512MB", help="chunk_size of the kill benchmark")
    parser.add_argument("--chunk-sizes", default=None, help="comma-separated: measure the cost of a package instead")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds the stand-in may take to start")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume_after_kill_") as folder:
        root = Path(folder)
        standin = StandIn(arguments.documents, 10, root / "standin.log", arguments.timeout)
        try:
            if arguments.chunk_sizes:
                sizes = arguments.chunk_sizes.split(",")
                chunk_overhead(standin, root, arguments.documents, sizes, arguments.repeat)
            else:
                resume_after_kill(standin, root, arguments.documents, arguments.chunk_size, arguments.repeat)
        finally:
            standin.stop()


if __name__ == "__main__":
    main()
