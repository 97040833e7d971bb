"""Our load throughput through `dagster asset materialize` against the client-side limit, in one run.

A fast read-only MongoDB stand-in (benchmarks/fast_standin.py, a child process) serves ~700-byte nested orders
from memory. The benchmark then, all against that one server:

1. materializes `raw_bench/orders_small` and `raw_bench/orders` with the real CLI in a subprocess each (fresh
   DAGSTER_HOME, dlt working folder and DuckDB file in a temporary folder): documents/s =
   (N_big - N_small) / (t_big - t_small), which cancels Dagster's fixed start-up cost;
2. reads the same `orders` documents with pymongoarrow into DuckDB: the client-side limit
   (benchmarks/pymongoarrow_limit.py, run in benchmarks/.limit-venv, which this script creates on first use from
   benchmarks/limit-requirements.txt: pymongoarrow needs pyarrow 25 and cannot join our pyarrow 26). Also, in this
   process, the fastest plain way we found without pymongoarrow (raw batches -> bson.decode_all -> Arrow columns,
   the same root table and two child tables -> a DuckDB file), as a second reference;
3. prints (1) / (2), the target ratio, and (1) / the plain reference;
4. prints the peak RSS of the largest single process among each dagster command and its descendants;
5. loads `raw_bench/orders_incremental` (cursor `seq`, append) in full, grows it by 1 %, loads it again, and
   prints the second run's time as a fraction of the first's.

Every subprocess has a timeout (a dagster command that hangs is killed with its whole process group), the stand-in
exits when this process goes away, and everything listens and connects on 127.0.0.1 only.

    .venv/bin/python benchmarks/arrow_throughput.py [--documents 200000] [--small 2000] [--skip-incremental]
                                                    [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import bson
import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pymongo
from bson.decimal128 import Decimal128

BENCHMARKS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DATABASE = "bench"
BIG, SMALL, INCREMENTAL = "orders", "orders_small", "orders_incremental"
BATCH_SIZE = 1000
LIMIT_VENV = BENCHMARKS / ".limit-venv"
LIMIT_REQUIREMENTS = BENCHMARKS / "limit-requirements.txt"

CONFIG = """\
defaults:
  connection_url: ${{MONGODB_URI}}
  batch_size: {batch_size}
destination:
  type: duckdb
  path: {duckdb}
dataset_prefix: mongo
databases:
  {database}:
    collections:
      {big}: {{}}
      {small}: {{}}
      {incremental}:
        incremental: {{cursor_field: seq}}
        write_disposition: append
"""

# Runs one command and writes the peak RSS (KiB) of its largest descendant, as the kernel counts it for waited-for
# children, to the file named first; the benchmark's own RUSAGE_CHILDREN would also count the stand-in.
PEAK_RSS_WRAPPER = """\
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""

@dataclass
class Run:
    label: str
    documents: int
    wall_seconds: float
    step_seconds: float
    rows_loaded: int
    peak_rss_mb: float


class StandIn:
    """benchmarks/fast_standin.py in a child process; it exits when our pipe to its standard input closes."""

    def __init__(self, documents: int, small: int, log: Path, timeout: float) -> None:
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(BENCHMARKS / "fast_standin.py"), "--documents", str(documents), "--small", str(small)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        self.uri = self.process.stdout.readline().strip() if ready else ""
        if not self.uri.startswith("mongodb://"):
            self.stop()
            raise SystemExit(f"the fast stand-in did not start within {timeout:.0f} s; see {log}")
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=10_000, socketTimeoutMS=60_000
        )

    def command(self, name: str, value: Any = 1, **fields: Any) -> dict[str, Any]:
        return self.client[DATABASE].command(name, value, **fields)

    def served(self, collection: str) -> int:
        """Documents sent for ``collection`` since the last call."""
        return int(self.command("benchStats", reset=True)["collections"][collection]["served"])

    def stop(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.log.close()


def materialize(key: str, env: dict[str, str], workdir: Path, timeout: float) -> tuple[float, float]:
    """Runs `dagster asset materialize` for ``key``: (wall seconds, peak RSS in MB of its largest process)."""
    name = key.replace("/", "__")
    log, peak_file = workdir / f"{name}.log", workdir / f"{name}.peak_rss"
    command = [sys.executable, "-c", PEAK_RSS_WRAPPER, str(peak_file),
               str(BIN / "dagster"), "asset", "materialize", "-m", "mongodb_dlt.definitions", "--select", key]
    started = time.perf_counter()
    with log.open("w") as out:
        # a session of its own, so that a timeout ends the whole tree: the CLI, the run and the step processes
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            raise SystemExit(f"dagster asset materialize {key} took over {timeout:.0f} s; see {log}") from None
    elapsed = time.perf_counter() - started
    if code != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"dagster asset materialize {key} exited with {code}; log: {log}")
    return elapsed, int(peak_file.read_text()) * 1024 / 1e6


def step_figures(dagster_home: Path, key: str) -> tuple[float, int]:
    """The loader's own duration (inside the step) and rows loaded, from the run's materialization metadata."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(key.split("/")))
    if event is None or event.asset_materialization is None:
        raise SystemExit(f"no materialization recorded for {key}")
    metadata = event.asset_materialization.metadata
    return float(metadata["duration_seconds"].value), int(metadata["rows_loaded"].value)  # type: ignore[arg-type]


# -- the client-side limit --------------------------------------------------------------------------------------

_CUSTOMER = pa.struct([
    ("name", pa.string()),
    ("email", pa.string()),
    ("address", pa.struct([(part, pa.string()) for part in ("street", "city", "zip", "country")])),
])
_ITEMS = pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64()), ("price", pa.float64())]))
_TAGS = pa.list_(pa.string())
_DECIMAL = pa.decimal128(38, 9)


def arrow_tables(raw: bytes) -> dict[str, pa.Table]:
    """One server reply -> the root table (sub-document flattened) and the `items` and `tags` child tables,
    typed as our loader types them. Explicit Arrow types, built by pyarrow's C++ from the decoded values."""
    documents = bson.decode_all(raw)
    customer = pa.array([d.get("customer") for d in documents], _CUSTOMER)
    address = customer.field("address")
    ids = pa.array([str(d["_id"]) for d in documents])
    root = {
        "_id": ids,
        "seq": pa.array([d.get("seq") for d in documents], pa.int64()),
        "status": pa.array([d.get("status") for d in documents], pa.string()),
        "created_at": pa.array([d.get("created_at") for d in documents], pa.timestamp("ms", tz="UTC")),
        "customer__name": customer.field("name"),
        "customer__email": customer.field("email"),
        **{f"customer__address__{part}": address.field(part) for part in ("street", "city", "zip", "country")},
        "total": decimal_array([d.get("total") for d in documents]),
        "note": pa.array([d.get("note") for d in documents], pa.string()),
    }
    tables = {"orders": pa.table(root)}
    for name, arrow_type in (("items", _ITEMS), ("tags", _TAGS)):
        lists = pa.array([d.get(name) for d in documents], arrow_type)
        parents = pc.list_parent_indices(lists)
        values = pc.list_flatten(lists)
        columns = {"_root_id": pc.take(ids, parents), "_list_idx": _list_index(lists)}
        if pa.types.is_struct(values.type):
            columns.update({field.name: values.field(field.name) for field in values.type})
        else:
            columns["value"] = values
        tables[f"orders__{name}"] = pa.table(columns)
    return tables


def decimal_array(values: list[Decimal128 | None]) -> pa.Array:
    """Decimal128 values as Arrow decimal128(38, 9), vectorized over their BID bytes when every value is a plain
    coefficient below 2**33 with an exponent between -9 and 0 (our orders' totals); exactly, through Python's
    Decimal, otherwise."""
    if values and all(isinstance(value, Decimal128) for value in values):
        words = np.frombuffer(b"".join(value.bid for value in values), dtype="<u8").reshape(-1, 2)  # type: ignore[union-attr]
        low, high = words[:, 0], words[:, 1]
        exponent = ((high >> np.uint64(49)) & np.uint64(0x3FFF)).astype(np.int64) - 6176
        # not the large-coefficient form (11 after the sign: also infinities and NaN), coefficient in the low word
        plain = ((high >> np.uint64(61)) & np.uint64(3) != 3) & (high & np.uint64((1 << 49) - 1) == 0)
        if bool(np.all(plain & (low < 2**33) & (exponent >= -9) & (exponent <= 0))):
            unscaled = low.astype(np.int64) * np.power(10, exponent + 9, dtype=np.int64)
            unscaled = np.where(high >> np.uint64(63) == 1, -unscaled, unscaled)
            data = np.column_stack([unscaled, unscaled >> 63])  # 16-byte little-endian two's complement
            return pa.Array.from_buffers(_DECIMAL, len(values), [None, pa.py_buffer(data.tobytes())])
    return pa.array([None if value is None else value.to_decimal() for value in values], _DECIMAL)


def _list_index(lists: pa.ListArray) -> pa.Array:
    """Each flattened value's position in its own list (``lists`` starts at offset 0, as built above)."""
    starts = pc.take(lists.offsets, pc.list_parent_indices(lists))
    return pc.subtract(pa.array(range(len(starts)), pa.int64()), pc.cast(starts, pa.int64()))


def _limit_python() -> Path:
    """benchmarks/.limit-venv's interpreter, after creating the venv from its pins if it is missing."""
    python = LIMIT_VENV / "bin" / "python"
    stamp = LIMIT_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != LIMIT_REQUIREMENTS.read_text():
        print(f"creating {LIMIT_VENV} from {LIMIT_REQUIREMENTS.name} (pymongoarrow, pyarrow 25) ...", flush=True)
        shutil.rmtree(LIMIT_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(LIMIT_VENV)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                        str(LIMIT_REQUIREMENTS)], check=True, timeout=900)
        stamp.write_text(LIMIT_REQUIREMENTS.read_text())
    return python


def pymongoarrow_limit(uri: str, duckdb_path: Path) -> tuple[int, float]:
    """pymongoarrow reads every `orders` document and DuckDB takes them, in a process of its own:
    (documents, seconds)."""
    done = subprocess.run([str(_limit_python()), str(BENCHMARKS / "pymongoarrow_limit.py"), uri, str(duckdb_path)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"pymongoarrow_limit.py failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return int(figures["documents"]), float(figures["seconds"])


def client_side_limit(uri: str, duckdb_path: Path) -> tuple[int, float]:
    """Reads every `orders` document the fastest plain way we found without pymongoarrow and inserts it into
    DuckDB: (documents, seconds)."""
    started = time.perf_counter()
    documents = 0
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=10_000, socketTimeoutMS=60_000
    )
    pending: dict[str, list[pa.Table]] = {}
    with duckdb.connect(str(duckdb_path)) as warehouse:

        def flush() -> None:
            for name, parts in pending.items():
                warehouse.register("chunk", pa.concat_tables(parts))
                exists = warehouse.execute(
                    "select count(*) from information_schema.tables where table_name = ?", [name]
                ).fetchone()
                if exists and exists[0]:
                    warehouse.execute(f'insert into "{name}" select * from chunk')
                else:
                    warehouse.execute(f'create table "{name}" as select * from chunk')
                warehouse.unregister("chunk")
            pending.clear()

        try:
            batches = client[DATABASE][BIG].find_raw_batches({}, sort=[("_id", 1)], batch_size=BATCH_SIZE)
            for number, raw in enumerate(batches, start=1):
                for name, table in arrow_tables(raw).items():
                    pending.setdefault(name, []).append(table)
                documents += pending["orders"][-1].num_rows
                if number % 50 == 0:  # about 35 MB of documents between inserts
                    flush()
            flush()
        finally:
            client.close()
    return documents, time.perf_counter() - started


# -- the report -------------------------------------------------------------------------------------------------


def _median_run(runs: list[Run]) -> Run:
    """The repetitions of one run as one: median wall and in-step times, the largest peak RSS."""
    return replace(
        runs[0],
        wall_seconds=statistics.median(run.wall_seconds for run in runs),
        step_seconds=statistics.median(run.step_seconds for run in runs),
        peak_rss_mb=max(run.peak_rss_mb for run in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000, help="documents in the big collection")
    parser.add_argument("--small", type=int, default=2_000, help="documents in the small collection")
    parser.add_argument("--skip-incremental", action="store_true", help="skip the incremental runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, DuckDB files)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure the small run, the big run and the limit this many times, each into a new "
                             "warehouse, and use their medians (the machine is shared: single runs move by seconds)")
    args = parser.parse_args()
    if not 0 < args.small < args.documents:
        parser.error("--small must be positive and below --documents")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    run_timeout = 600 + args.documents / 500  # seconds: 1,000 s at 200k documents, 4,600 s at 2M
    runs: list[Run] = []

    workdir = Path(tempfile.mkdtemp(prefix="mongodb_dlt_bench_"))
    try:
        print(f"generating {args.documents:,} documents in the fast stand-in ...", flush=True)
        standin = StandIn(args.documents, args.small, workdir / "standin.log", timeout=120 + args.documents / 5_000)
        try:
            dagster_home = workdir / "dagster_home"
            dagster_home.mkdir()
            (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            env: dict[str, str] = {}

            def new_warehouse(number: int) -> None:
                """A config of its own for each repetition: a fresh DuckDB file and working folder."""
                config = workdir / f"databases_{number}.yaml"
                config.write_text(CONFIG.format(batch_size=BATCH_SIZE, duckdb=workdir / f"warehouse_{number}.duckdb",
                                                database=DATABASE, big=BIG, small=SMALL, incremental=INCREMENTAL))
                env.update({
                    **os.environ,
                    "MONGODB_DLT_CONFIG": str(config),
                    "MONGODB_URI": standin.uri,
                    "DAGSTER_HOME": str(dagster_home),
                    "MONGODB_DLT_PIPELINES_DIR": str(workdir / f"pipelines_{number}"),
                    "RUNTIME__DLTHUB_TELEMETRY": "false",
                })

            def load(collection: str, label: str) -> Run:
                key = f"raw_{DATABASE}/{collection}"
                print(f"dagster asset materialize --select {key} ({label}) ...", flush=True)
                standin.served(collection)
                wall, peak = materialize(key, env, workdir, run_timeout)
                step, rows = step_figures(dagster_home, key)
                run = Run(label, standin.served(collection), wall, step, rows, peak)
                runs.append(run)
                return run

            smalls, bigs, limits, plains = [], [], [], []
            for number in range(1, args.repeat + 1):
                new_warehouse(number)
                suffix = f" #{number}" if args.repeat > 1 else ""
                smalls.append(load(SMALL, f"small{suffix}"))
                bigs.append(load(BIG, f"big{suffix}"))
                print(f"client-side limit: reading {BIG} with pymongoarrow into DuckDB ...", flush=True)
                limits.append(pymongoarrow_limit(standin.uri, workdir / f"limit_{number}.duckdb"))
                print(f"plain reference: reading {BIG} with bson.decode_all + Arrow + DuckDB ...", flush=True)
                plains.append(client_side_limit(standin.uri, workdir / f"plain_{number}.duckdb"))
            small, big = _median_run(smalls), _median_run(bigs)
            limit_documents, limit_seconds = limits[0][0], statistics.median(seconds for _, seconds in limits)
            plain_documents, plain_seconds = plains[0][0], statistics.median(seconds for _, seconds in plains)
            incremental = None
            if not args.skip_incremental:
                full = load(INCREMENTAL, "incremental, full")
                grown = args.documents + max(1, args.documents // 100)
                standin.command("benchSetCount", INCREMENTAL, count=grown)
                incremental = (full, load(INCREMENTAL, "incremental, +1 %"))
            standin_note = (workdir / "standin.log").read_text().strip().splitlines()[-1:]
        finally:
            standin.stop()
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(*standin_note)
    print(f"{'run':<20} {'docs read':>10} {'rows':>10} {'wall s':>8} {'in-step s':>9} {'peak RSS MB':>11}")
    for run in runs:
        print(f"{run.label:<20} {run.documents:>10,} {run.rows_loaded:>10,} {run.wall_seconds:>8.1f} "
              f"{run.step_seconds:>9.1f} {run.peak_rss_mb:>11.0f}")
    for documents, seconds in limits:
        print(f"{'limit, pymongoarrow':<20} {documents:>10,} {documents:>10,} {seconds:>8.1f}")
    for documents, seconds in plains:
        print(f"{'plain reference':<20} {documents:>10,} {documents:>10,} {seconds:>8.1f}")
    if args.repeat > 1:
        print(f"medians of {args.repeat}: small {small.wall_seconds:.1f} s, big {big.wall_seconds:.1f} s "
              f"(in the step {big.step_seconds:.1f} s), limit {limit_seconds:.1f} s, plain {plain_seconds:.1f} s")
    print()

    ours = (big.documents - small.documents) / (big.wall_seconds - small.wall_seconds)
    fixed = small.wall_seconds - small.documents / ours
    in_step = big.documents / big.step_seconds
    limit = limit_documents / limit_seconds
    ratio = ours / limit
    plain = plain_documents / plain_seconds
    peak = max(run.peak_rss_mb for run in runs)
    figures: dict[str, Any] = {
        "documents": args.documents,
        "ours_documents_per_second": round(ours),
        "limit_documents_per_second": round(limit),
        "ratio": round(ratio, 3),
        "plain_reference_documents_per_second": round(plain),
        "ratio_to_plain_reference": round(ours / plain, 3),
        "peak_rss_mb": round(peak),
    }
    print(f"1. ours: {ours:,.0f} documents/s through `dagster asset materialize` "
          f"((N_big - N_small) / (t_big - t_small); fixed start-up cost ~{fixed:.1f} s; "
          f"{in_step:,.0f} documents/s inside the step)")
    print(f"2. client-side limit: {limit:,.0f} documents/s (find_arrow_all with the documents' nested schema ->"
          f" one DuckDB insert, no child tables; pymongoarrow 1.15.0 in benchmarks/.limit-venv)")
    print(f"3. ratio ours / limit: {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}); against the"
          f" plain reference without pymongoarrow ({plain:,.0f} documents/s: bson.decode_all -> Arrow root + 2 child"
          f" tables -> DuckDB, one process) {ours / plain:.2f}")
    print(f"4. peak RSS: {peak:,.0f} MB, the largest single process among a dagster command and its descendants "
          f"(RUSAGE_CHILDREN ru_maxrss after the command, counting only reaped descendants) at "
          f"{args.documents:,} documents (target <= 500 MB: {'met' if peak <= 500 else 'NOT met'})")
    if incremental is not None:
        full, delta = incremental
        wall_fraction = delta.wall_seconds / full.wall_seconds
        step_fraction = delta.step_seconds / full.step_seconds
        figures.update(incremental_wall_fraction=round(wall_fraction, 4),
                       incremental_step_fraction=round(step_fraction, 4))
        print(f"5. incremental run ({delta.documents:,} documents read, {delta.rows_loaded:,} rows loaded): "
              f"{wall_fraction:.1%} of the full load's wall time ({delta.wall_seconds:.1f} s / "
              f"{full.wall_seconds:.1f} s, target <= 5%: {'met' if wall_fraction <= 0.05 else 'NOT met'}); "
              f"inside the step {step_fraction:.1%} ({delta.step_seconds:.1f} s / {full.step_seconds:.1f} s)")
    else:
        print("5. incremental run: skipped (--skip-incremental)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
