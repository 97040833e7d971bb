"""What a newcomer meets in the first hour: every mistake answered in one clear message, nothing raw.

The CLI's discover on a URL pymongo refuses, a connection URL variable that is not a MongoDB URI, a component's
YAML error as dg shows one, the stand-in without its extra, ``primary_key`` as README gives it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from mongodb_dlt.cli import main
from mongodb_dlt.component import COMPONENT_TYPE, ComponentConfigError, MongoDltComponent


def _component_error(tmp_path: Path, yaml: str) -> str:
    config = tmp_path / "databases.yaml"
    config.write_text(yaml)
    with pytest.raises(ComponentConfigError) as raised:
        dg.component_defs(component=MongoDltComponent(config_path=str(config)))
    return str(raised.value)


def test_a_component_error_is_drawn_as_dg_draws_a_schema_error(tmp_path: Path) -> None:
    shown = _component_error(
        tmp_path,
        "destination: duckdb\ndatabases:\n  shop:\n    collections:\n      orders: {write_disposition: upsrt}\n",
    )
    key = "databases.shop.collections.orders.write_disposition"
    assert shown.splitlines() == [
        f"{tmp_path / 'databases.yaml'}:5 - {COMPONENT_TYPE} {key} 'upsrt' is not one of merge, append, replace",
        "     | ",
        "   4 |     collections:",
        "   5 |       orders: {write_disposition: upsrt}",
        "     |                ^ 'upsrt' is not one of merge, append, replace",
        "     | ",
    ]


def test_each_problem_gets_its_frame_and_the_lines_shown_keep_no_password(tmp_path: Path) -> None:
    shown = _component_error(
        tmp_path,
        "defaults:\n  connection_url: mongodb://etl:Pa55word@db.internal/\n  max_parallel_collections: 0\n"
        "databases:\n  shop: [orders]\n",
    )
    assert "Pa55word" not in shown
    assert "2 |   connection_url: mongodb://etl:****@db.internal/" in shown
    assert f":2 - {COMPONENT_TYPE} defaults.connection_url holds a literal password" in shown
    assert f":3 - {COMPONENT_TYPE} defaults.max_parallel_collections must be a positive number, got 0" in shown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        pytest.param(
            "mongodb://u:p@ss@127.0.0.1:1/",
            "cannot list mongodb://u:****@127.0.0.1:1/: InvalidURI: Username and password must be escaped",
            id="unescaped-at",
        ),
        pytest.param(
            "mongo://u:p4ss@127.0.0.1:1/",
            "cannot list mongo://u:****@127.0.0.1:1/: InvalidURI: Invalid URI scheme",
            id="scheme",
        ),
        # .invalid never resolves (RFC 6761): whether a DNS server says so or none answers, pymongo raises one error
        pytest.param(
            "mongodb+srv://u:p4ss@cluster.example.invalid/",
            "cannot list mongodb+srv://u:****@cluster.example.invalid/: ConfigurationError: ",
            id="srv-unresolved",
        ),
    ],
)
def test_discover_refuses_a_url_pymongo_cannot_use_in_one_line(
    uri: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["discover", "--uri", uri, "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {shown}") and captured.err.count("\n") == 1
    assert "p4ss" not in captured.err and "p@ss" not in captured.err
