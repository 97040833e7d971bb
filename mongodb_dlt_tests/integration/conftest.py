"""Fixtures of the integration tests: the probe of pymongo's default server selection timeout, started early."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from mongodb_dlt.errors import MongoUnreachableError
from mongodb_dlt.extract.mongo import check_reachable

DEFAULT_TIMEOUT_TEST = "test_closed_port_with_the_default_timeout_gives_up_once_within_the_bound"


def closed_port() -> int:
    """A port nothing listens on: bound once to get a free number, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_message(url: str) -> tuple[str, float]:
    """What ``check_reachable`` raises for ``url``, and how long it took to raise it."""
    started = time.monotonic()
    with pytest.raises(MongoUnreachableError) as raised:
        check_reachable(url)
    return str(raised.value), time.monotonic() - started


@dataclass(frozen=True)
class DefaultTimeoutProbe:
    """``check_reachable`` of a closed port with pymongo's default server selection timeout, running in a thread."""

    port: int
    outcome: Future[tuple[str, float]]


@pytest.fixture(autouse=True, scope="package")
def default_timeout_probe(request: pytest.FixtureRequest) -> Iterator[DefaultTimeoutProbe | None]:
    """The one check that waits out the default 10 s timeout starts with the folder's first test, in a thread of its
    own, and its test (in test_unreachable.py, near the end of the folder) takes the outcome: the wait overlaps the
    other tests instead of adding 10 s to the run. The thread measures the check alone, as the test did; it spends
    its time waiting for pymongo's server selection, so the tests running meanwhile cannot stretch it by seconds.
    Not started when that test is not selected."""
    if not any(item.name == DEFAULT_TIMEOUT_TEST for item in request.session.items):
        yield None
        return
    # The port stays bound (not listening) meanwhile: connections to it are refused, and no stand-in started by
    # another test can be given it.
    with socket.socket() as held, ThreadPoolExecutor(1, thread_name_prefix="default-timeout-probe") as pool:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        yield DefaultTimeoutProbe(port, pool.submit(unreachable_message, f"mongodb://user:s3cret@127.0.0.1:{port}/"))
