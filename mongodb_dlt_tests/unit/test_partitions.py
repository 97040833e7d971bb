"""partitions: the option's validation (file, line, key), its inheritance, and the factory's shape: a multi-asset per
database and partitions definition, named by naming.py, with Dagster's time windows and a multi-run backfill."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from mongodb_dlt.checks import DOCUMENTS_IN_WINDOWS
from mongodb_dlt.config import ConfigError, load_config
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.extract.mongo import Window, query
from mongodb_dlt.factory import dlt_asset_factory
from mongodb_dlt.naming import partitioned_op_name

UTC = dt.UTC


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def one_collection(options: str) -> str:
    return f"""
        databases:
          shop:
            collections:
              events:
                {options}
        """


@pytest.mark.parametrize(
    ("options", "line", "key", "problem"),
    [
        ('partitions: {by: created_at, every: day, start: "nope"}', 5, "partitions.start", "not a date or date-time"),
        ("partitions: {by: created_at, every: fortnight, start: 2024-01-01}", 5, "partitions.every", "fortnight"),
        ("partitions: {by: $when, every: day, start: 2024-01-01}", 5, "partitions.by", "is not a field path"),
        ("partitions: {by: a..b, every: day, start: 2024-01-01}", 5, "partitions.by", "is not a field path"),
        ("partitions: {every: day, start: 2024-01-01}", 5, "partitions.by", "required"),
        ('partitions: {by: t, every: day, start: "2024-01-01T06:00"}', 5, "partitions", "at midnight UTC"),
        ('partitions: {by: t, every: hour, start: "2024-01-01T06:30"}', 5, "partitions", "on the hour"),
        ("partitions: {by: t, every: month, start: 2024-01-29}", 5, "partitions", "day 1 to 28"),
        ("partitions: {by: t, every: day, start: 2024-01-01, end: 2024-02-01}", 5, "partitions.end", "end"),
        (
            "{write_disposition: append, partitions: {by: t, every: day, start: 2024-01-01}}",
            5,
            "partitions",
            "append would add a window's rows again",
        ),
        (
            "{write_disposition: replace, partitions: {by: t, every: day, start: 2024-01-01}}",
            5,
            "partitions",
            "replace would keep the last window's rows only",
        ),
        (
            "{incremental: {cursor_field: t}, partitions: {by: t, every: day, start: 2024-01-01}}",
            5,
            "partitions",
            "partitions with incremental",
        ),
    ],
)
def test_a_bad_partitions_option_is_refused_where_it_is(
    tmp_path: Path, options: str, line: int, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, one_collection(options)))
    error = raised.value
    assert (error.line, error.key) == (line, f"databases.shop.collections.events.{key}"), str(error)
    assert problem in error.problem


def test_an_inherited_disposition_that_conflicts_names_where_it_comes_from(tmp_path: Path) -> None:
    path = write(tmp_path, """
        defaults:
          write_disposition: append
        databases:
          shop:
            collections:
              events:
                partitions: {by: t, every: day, start: 2024-01-01}
        """)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.key == "databases.shop.collections.events.partitions"
    assert "write_disposition comes from defaults.write_disposition, line 2" in raised.value.problem


@pytest.mark.parametrize(
    ("start", "every", "expected"),
    [
        ('"2024-01-01"', "day", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-03", "week", dt.datetime(2024, 1, 3, tzinfo=UTC)),
        ('"2024-01-01T08:00:00+02:00"', "hour", dt.datetime(2024, 1, 1, 6, tzinfo=UTC)),
        ('"2024-02-15"', "month", dt.datetime(2024, 2, 15, tzinfo=UTC)),
    ],
)
def test_start_is_a_utc_instant_inherited_from_the_database(
    tmp_path: Path, start: str, every: str, expected: dt.datetime
) -> None:
    config = load_config(write(tmp_path, f"""
        databases:
          shop:
            partitions: {{by: created_at, every: {every}, start: {start}}}
            collections: [events, orders]
        """))
    for collection in config.databases["shop"].collections.values():
        assert collection.partitions is not None
        assert collection.partitions.start == expected and collection.partitions.start.tzinfo == UTC
        assert not collection.reads_whole_collection  # its check counts the rows each load added


def test_a_database_op_named_like_a_partitioned_op_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        databases:
          shop:
            collections:
              events: {partitions: {by: t, every: day, start: 2024-01-01}}
          shop__day_20240101: [other]
        """)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "op mongodb_shop__day_20240101" in raised.value.problem
    assert "databases.shop.collections.events.partitions" in raised.value.problem


def test_partitioned_collections_get_a_multi_asset_per_partitions_definition(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
        databases:
          shop:
            schedule: "0 * * * *"
            collections:
              orders: {}
              events: {partitions: {by: created_at, every: day, start: 2024-01-01}}
              clicks: {partitions: {by: at, every: day, start: 2024-01-01}}
              logs: {partitions: {by: _id, every: hour, start: "2024-01-01T06:00"}}
              months: {partitions: {by: at, every: month, start: 2024-01-15}}
              weeks: {partitions: {by: at, every: week, start: 2024-01-03}}
        """))
    assets = {a.node_def.name: a for a in dlt_asset_factory(config)}
    day, hour = "mongodb_shop__day_20240101", "mongodb_shop__hour_20240101T06"
    month, week = "mongodb_shop__month_20240115", "mongodb_shop__week_20240103"
    assert set(assets) == {"mongodb_shop", day, hour, month, week}
    assert partitioned_op_name("mongodb_shop", "day", dt.datetime(2024, 1, 1, tzinfo=UTC)) == day
    keys = {name: {key.path[-1] for key in a.keys} for name, a in assets.items()}
    assert keys == {"mongodb_shop": {"orders"}, day: {"events", "clicks"}, hour: {"logs"}, month: {"months"},
                    week: {"weeks"}}
    assert assets["mongodb_shop"].partitions_def is None
    for name, kind, first in [
        (day, dg.DailyPartitionsDefinition, "2024-01-01"),
        (hour, dg.HourlyPartitionsDefinition, "2024-01-01-06:00"),
        (month, dg.MonthlyPartitionsDefinition, "2024-01-15"),
        (week, dg.WeeklyPartitionsDefinition, "2024-01-03"),
    ]:
        definition = assets[name].partitions_def
        assert isinstance(definition, kind) and definition.timezone == "UTC"
        assert definition.get_first_partition_key() == first
        assert assets[name].backfill_policy == dg.BackfillPolicy.multi_run(1)
        assert {spec.group_name for spec in assets[name].specs} == {"shop"}
        checks = {check.name for check in assets[name].check_specs}
        assert DOCUMENTS_IN_WINDOWS in checks
    assert DOCUMENTS_IN_WINDOWS not in {check.name for check in assets["mongodb_shop"].check_specs}
    window = assets[week].partitions_def.time_window_for_partition_key("2024-01-10")
    assert (window.start, window.end) == (dt.datetime(2024, 1, 10, tzinfo=UTC), dt.datetime(2024, 1, 17, tzinfo=UTC))

    # the jobs and the database's schedule take its unpartitioned collections
    definitions = build_definitions(config)
    for job in ("mongodb_all", "mongodb_shop_job"):
        selected = {key.path[-1] for key in definitions.resolve_job_def(job).asset_layer.selected_asset_keys}
        assert selected == {"orders"}


def test_a_window_reads_its_bracket_and_counts_the_rest() -> None:
    start, end = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)
    window = Window.of("2024-01-01", "created_at", start, end, start)
    assert query({"shop": "a"}, None, [], window) == {
        "$and": [{"shop": "a"}, {"created_at": {"$gte": start, "$lt": end}}]
    }
    assert window.outside() == {"created_at": {"$not": {"$gte": start}}}
    by_id = Window.of("2024-01-01", "_id", start, end, start)
    assert by_id.start.generation_time == start and by_id.end.generation_time == end
    assert str(by_id.start) == "659200800000000000000000"
