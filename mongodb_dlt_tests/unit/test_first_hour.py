"""What a newcomer meets in the first hour: every mistake answered in one clear message, nothing raw.

The CLI's discover on a URL pymongo refuses, a connection URL variable that is not a MongoDB URI, a component's
YAML error as dg shows one, the stand-in without its extra, ``primary_key`` as README gives it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

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
