"""One writer per collection: an exclusive lock that the operating system releases when its holder dies.

Two processes loading one collection at once would work in the same dlt working folder and apply packages
twice. The lock is an ``flock`` on a file beside the pipeline's working folder, so a killed holder (SIGKILL,
a lost container) never leaves it behind; the file itself records who holds it, for the message the second
process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mongodb_dlt.errors import CollectionBusyError


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    parts = [f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}"]
    if holder.get("run_id"):
        parts.append(f"Dagster run {holder['run_id']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


@contextmanager
def collection_lock(path: Path, label: str, run_id: str | None = None, wait: bool = False) -> Iterator[None]:
    """Holds the exclusive lock at ``path`` for the block; raises CollectionBusyError at once when a live
    process holds it, or with ``wait`` waits until it is free (the partitions of one collection, taking turns
    for their load step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CollectionBusyError(
                f"{label} is being loaded by another process ({describe_holder(_holder(path))}); lock file "
                f"{path}. It is released when that process ends: wait for it, or stop it, then run again."
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_id": run_id,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
