"""How long Dagster definitions take to build from a large YAML (100 databases x 50 collections by default).

    .venv/bin/python benchmarks/definitions_load.py [--databases 100] [--collections 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mongodb_dlt.config import load_config
from mongodb_dlt.definitions import build_definitions


def write_yaml(path: Path, databases: int, collections: int) -> None:
    lines = ["defaults:", "  connection_url: ${MONGODB_URI}", "databases:"]
    for d in range(databases):
        lines.append(f"  db_{d:03d}:")
        lines.append("    collections:")
        for c in range(collections):
            options = "{incremental: {cursor_field: updated_at}, write_disposition: append}" if c % 5 == 0 else "{}"
            lines.append(f"      coll_{c:02d}: {options}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--collections", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "databases.yaml"
        write_yaml(path, args.databases, args.collections)
        started = time.perf_counter()
        config = load_config(path)
        parsed = time.perf_counter()
        defs = build_definitions(config)
        built = time.perf_counter()
        repository = defs.get_repository_def()
        asset_graph = repository.asset_graph
        resolved = time.perf_counter()
    print(f"{args.databases} databases x {args.collections} collections "
          f"({len(list(asset_graph.get_all_asset_keys()))} assets, {len(repository.get_all_jobs())} jobs)")
    print(f"load_config:          {parsed - started:6.2f} s")
    print(f"build_definitions:    {built - parsed:6.2f} s")
    print(f"resolve repository:   {resolved - built:6.2f} s")
    print(f"total:                {resolved - started:6.2f} s")


if __name__ == "__main__":
    main()
