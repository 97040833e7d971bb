"""Unreachable servers: one ping per server before a database fans out, so a wrong host, port or password fails
once, fast, on one line without the password, and databases on working servers still load."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pytest

from mongodb_dlt.config import load_config
from mongodb_dlt.extract.mongo import check_reachable
from mongodb_dlt.factory import LOADER_RESOURCE_KEY, dlt_asset_factory
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.integration.conftest import DefaultTimeoutProbe, closed_port, unreachable_message

# The default server selection timeout is 10 s: one wait plus the client's start and stop.
DEFAULT_BOUND_SECONDS = 15.0
# Where the test is about the message, not the timeout, the URL asks pymongo to give up sooner.
SHORT = "serverSelectionTimeoutMS=500"


@dataclass(frozen=True)
class Case:
    name: str
    url: Callable[[int, str], str]  # (closed port, stand-in URI) -> the URL to check
    contains: tuple[str, ...]  # "{port}" is the closed port
    bound_seconds: float = 5.0


CASES = [
    Case(
        "closed port, password in the URL",
        lambda port, _: f"mongodb://user:s3cret@127.0.0.1:{port}/?{SHORT}",
        ("cannot reach MongoDB at mongodb://user:****@127.0.0.1:{port}/", "127.0.0.1:{port}: ",
         "Connection refused", "(after "),
    ),
    Case(
        "two hosts, both closed",
        lambda port, _: f"mongodb://user:s3cret@127.0.0.1:{port},127.0.0.1:{port}/?{SHORT}&replicaSet=rs0",
        ("127.0.0.1:{port}: ", "Connection refused"),
    ),
    Case(
        "wrong password on a live server",
        lambda _, uri: uri.replace("mongodb://", "mongodb://user:s3cret@"),
        ("cannot reach MongoDB at mongodb://user:****@", "OperationFailure: Authentication failed"),
    ),
    Case(
        "not a MongoDB URL",
        lambda _, __: "http://user:s3cret@127.0.0.1/",
        ("cannot reach MongoDB at http://user:****@127.0.0.1/", "InvalidURI"),
        bound_seconds=1.0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_unreachable_server_fails_fast_on_one_masked_line(case: Case, standin: MongoStandIn) -> None:
    port = closed_port()
    message, elapsed = unreachable_message(case.url(port, standin.uri))
    assert elapsed < case.bound_seconds, (elapsed, message)
    assert "\n" not in message
    assert "s3cret" not in message and "***" in message
    assert "Topology" not in message and "configured timeouts" not in message and "Timeout:" not in message
    for expected in case.contains:
        assert expected.format(port=port) in message, message


def test_reachable_server_passes(standin: MongoStandIn) -> None:
    check_reachable(standin.uri)


# Through Dagster: a database on a closed port next to one on the working stand-in.
CONFIG = """
defaults:
  connection_url: ${{MONGODB_URI}}
  retries: {{max_attempts: 3, backoff_seconds: 0.5}}
destination:
  type: duckdb
  path: {{duckdb}}
databases:
  down:
    connection_url: ${{DOWN_MONGODB_URI}}
    collections: [orders, customers, events]
  shop: [products]
"""


def test_database_on_an_unreachable_server_fails_once_and_others_still_load(
    project: Project, standin: MongoStandIn, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.client.shop.products.insert_many([{"_id": i, "name": f"p{i}"} for i in range(5)])
    port = closed_port()
    monkeypatch.setenv("DOWN_MONGODB_URI", f"mongodb://loader:s3cret@127.0.0.1:{port}/?serverSelectionTimeoutMS=2000")
    config = load_config(project.write_config(CONFIG.format(port=port)))
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=str(project.pipelines_dir))

    started = time.monotonic()
    result = dg.materialize(
        dlt_asset_factory(config), resources={LOADER_RESOURCE_KEY: loader}, instance=instance, raise_on_error=False
    )
    elapsed = time.monotonic() - started

    # before: 3 collections x (3 server selections of 10 s + backoff); now one 2 s ping for the three
    assert elapsed < DEFAULT_BOUND_SECONDS, elapsed
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {dg.AssetKey(["raw_shop", "products"])}
    assert project.scalar("select count(*) from mongo_shop.products") == 5

    [failure] = result.get_step_failure_events()
    assert failure.step_key == "mongodb_down"
    message = failure.step_failure_data.error.message
    assert "3 of 3 collection(s) of down failed: orders, customers, events not started: " in message
    assert f"cannot reach MongoDB at mongodb://loader:****@127.0.0.1:{port}/" in message
    # the step waited out the URL's 2 s server selection timeout once (more on a busy machine), not once per collection
    waited = re.search(rf"127\.0\.0\.1:{port}: \[Errno 111\] Connection refused \(after (\d+) s\)", message)
    assert waited is not None, message
    assert 2 <= int(waited[1]) < DEFAULT_BOUND_SECONDS
    assert "Topology" not in message

    logs = [entry.user_message or "" for entry in instance.all_logs(result.run_id)]
    assert not any("s3cret" in line for line in [*logs, message])
    # the loader never ran for them: no per-collection attempts, retries or topology dumps
    assert not any("down." in line for line in logs), [line for line in logs if "down." in line]
    assert sum("cannot reach MongoDB" in line for line in logs) == 1


def test_closed_port_with_the_default_timeout_gives_up_once_within_the_bound(
    default_timeout_probe: DefaultTimeoutProbe | None,
) -> None:
    # the check started with the folder's first test (conftest.py): its outcome and its own elapsed time
    assert default_timeout_probe is not None
    port = default_timeout_probe.port
    message, elapsed = default_timeout_probe.outcome.result()
    # one server selection of the 10 s default, not pymongo's 30 s, and no retries
    assert 9.0 <= elapsed <= DEFAULT_BOUND_SECONDS, (elapsed, message)
    assert message == (
        f"cannot reach MongoDB at mongodb://user:****@127.0.0.1:{port}/: "
        f"127.0.0.1:{port}: [Errno 111] Connection refused (after 10 s)"
    )
