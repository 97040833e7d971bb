"""The client-side limit as the issue defines it: raw BSON -> pymongoarrow -> DuckDB, in a process of its own.

Runs in benchmarks/.limit-venv (pinned by benchmarks/limit-requirements.txt; arrow_throughput.py creates it) and
reads every `bench.orders` document of the fast stand-in with pymongoarrow's C decoder, into one Arrow table with
the documents' nested shape (a struct for the customer, lists for items and tags), then inserts it into a new
DuckDB file. No child tables are built: this is what the client can do at best. Prints one JSON line:
``{"documents": n, "seconds": s, "decode_seconds": d}``.

    benchmarks/.limit-venv/bin/python benchmarks/pymongoarrow_limit.py mongodb://127.0.0.1:PORT/ out.duckdb
"""

from __future__ import annotations

import json
import sys
import time

import duckdb
import pyarrow as pa
import pymongo
from pymongoarrow.api import Schema, find_arrow_all
from pymongoarrow.types import Decimal128Type, ObjectIdType

SCHEMA = Schema({
    "_id": ObjectIdType(),
    "seq": pa.int64(),
    "status": pa.string(),
    "created_at": pa.timestamp("ms"),
    "customer": pa.struct([
        ("name", pa.string()),
        ("email", pa.string()),
        ("address", pa.struct([(part, pa.string()) for part in ("street", "city", "zip", "country")])),
    ]),
    "items": pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64()), ("price", pa.float64())])),
    "tags": pa.list_(pa.string()),
    "total": Decimal128Type(),
    "note": pa.string(),
})


def main() -> None:
    uri, duckdb_path = sys.argv[1], sys.argv[2]
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000, socketTimeoutMS=60_000)
    try:
        started = time.perf_counter()
        table = find_arrow_all(client.bench.orders, {}, schema=SCHEMA, sort=[("_id", 1)], batch_size=1000)
        decoded = time.perf_counter()
        # DuckDB takes no Arrow extension types: ObjectId and Decimal128 go in as their stored bytes
        plain = pa.table({
            name: column.storage if isinstance(column.type, pa.ExtensionType) else column
            for name, column in ((name, table[name].combine_chunks()) for name in table.column_names)
        })
        with duckdb.connect(duckdb_path) as warehouse:
            warehouse.register("documents", plain)
            warehouse.execute("create table orders as select * from documents")
        seconds = time.perf_counter() - started
    finally:
        client.close()
    print(json.dumps({"documents": table.num_rows, "seconds": seconds, "decode_seconds": decoded - started}))


if __name__ == "__main__":
    main()
