"""``python -m mongodb_dlt.testing``: serve the sample data on a local port until Ctrl-C or SIGTERM.

The first line written to stdout is the connection string, so scripts can read it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from mongodb_dlt.cli import missing_standin_package


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mongodb_dlt.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--seed", type=int, default=42, help="sample data seed (default 42)")
    parser.add_argument("--scale", type=float, default=1.0, help="sample data size factor (default 1.0)")
    args = parser.parse_args(argv)
    try:
        from mongodb_dlt.testing import MongoStandIn, populate_sample_data
    except ModuleNotFoundError as error:  # as `mongodb-dlt demo` says it
        if (problem := missing_standin_package(error)) is None:
            raise
        sys.stderr.write(f"error: {problem}\n")
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with MongoStandIn(host=args.host, port=args.port) as standin:
        counts = populate_sample_data(standin.client, seed=args.seed, scale=args.scale)
        sys.stdout.write(standin.uri + "\n")
        sys.stdout.flush()
        for database, collections in counts.items():
            listing = ", ".join(f"{name}: {count}" for name, count in collections.items())
            sys.stderr.write(f"{database}: {listing}\n")
        sys.stderr.write("serving; Ctrl-C or SIGTERM stops\n")
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
