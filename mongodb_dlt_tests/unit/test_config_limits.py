"""What the YAML may hold beyond its own keys: aliases that expand past MAX_YAML_VALUES or into themselves are
refused, at the alias's line and key, before any value is built; ``destination.options`` names only what the dlt
destination accepts, since dlt drops anything else with a log warning."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from dlt.common.destination import Destination

import mongodb_dlt.config.document as document
from mongodb_dlt.config import ConfigError, load_config

HEADER = """\
defaults:
  connection_url: mongodb://localhost/
databases:
  shop:
    collections:
      orders:
"""


def laughs(indent: int) -> str:
    """Nine levels of ten aliases: 10**9 values once expanded, each level on its own line (a: line 1, b: line 2...)."""
    lines = [f"a: &a [{', '.join(['lol'] * 10)}]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return textwrap.indent("\n".join(lines), " " * indent)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(text)
    return path


def refused(path: Path, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    assert len(info.value.errors) == 1, str(info.value)
    return info.value


# Values before the culprit: the header's and the options', then a (11 values), b (111), ... e (111,111), then f's
# list and seven of its *e aliases (123,477 + 7 x 111,111); the eighth *e (f[7]) passes 1,000,000.
@pytest.mark.parametrize(
    ("option", "line", "key"),
    [
        ("tags", 13, "databases.shop.collections.orders.tags.f[7]"),
        ("filter", 13, "databases.shop.collections.orders.filter.f[7]"),
    ],
)
def test_billion_laughs_is_refused_at_the_alias_that_passes_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, line: int, key: str
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("a value was built before the aliases were counted")

    monkeypatch.setattr(document.Document, "_value", never)
    path = write(tmp_path, f"{HEADER}        {option}:\n{laughs(10)}\n")
    error = refused(path)
    assert (error.path, error.line, error.key) == (path, line, key)
    assert error.problem.startswith("the alias *e takes the file past 1,000,000 values"), error.problem


def test_the_key_is_named_as_the_file_has_it_inside_a_section(tmp_path: Path) -> None:
    body = textwrap.indent(f"{HEADER}        tags:\n{laughs(10)}\n", "  ")
    path = write(tmp_path, f"type: mongodb_dlt.MongoDltComponent\nattributes:\n{body}")
    error = refused(path, section=("attributes",))
    assert (error.line, error.key) == (15, "attributes.databases.shop.collections.orders.tags.f[7]")


@pytest.mark.parametrize(
    ("body", "line", "key"),
    [
        ("        tags: &t {a: [1, *t]}\n", 7, "databases.shop.collections.orders.tags.a[1]"),
        ("        filter: &f\n          x: *f\n", 8, "databases.shop.collections.orders.filter.x"),
    ],
)
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path, body: str, line: int, key: str) -> None:
    path = write(tmp_path, HEADER + body)
    error = refused(path)
    assert (error.line, error.key) == (line, key)
    assert "inside its own anchor" in error.problem


# A 10-value anchor (its list and nine scalars) repeated by aliases; the header adds 13 values, `filter: {t: [` 4.
@pytest.mark.parametrize(("aliases", "allowed"), [(3, True), (4, False)])
def test_the_limit_counts_every_value_an_alias_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aliases: int, allowed: bool
) -> None:
    monkeypatch.setattr(document, "MAX_YAML_VALUES", 17 + 10 + 10 * aliases - (0 if allowed else 1))
    items = ", ".join(["*x"] * aliases)
    path = write(tmp_path, f"{HEADER}        filter: {{t: [&x [1, 2, 3, 4, 5, 6, 7, 8, 9], {items}]}}\n")
    if allowed:
        assert load_config(path).databases["shop"].collections["orders"].filter["t"][1] == list(range(1, 10))
    else:
        error = refused(path)
        assert (error.line, error.key) == (7, f"databases.shop.collections.orders.filter.t[{aliases}]")


def test_anchors_for_shared_options_across_5000_collections_load(tmp_path: Path) -> None:
    options = [
        "          filter: {status: active, region: {$in: [eu, us, asia]}}",
        f"          projection: [{', '.join(f'field_{i}' for i in range(10))}]",
        "          tags: {team: data, owner: alice, tier: gold}",
        "          incremental: {cursor_field: updated_at, initial_value: '2020-01-01T00:00:00Z'}",
        "          write_disposition: append",
    ]
    lines = ["defaults:", "  connection_url: mongodb://localhost/", "databases:"]
    for d in range(100):
        lines += [f"  db_{d:03d}:", "    collections:"]
        if d == 0:
            lines += ["      first: &options", *options]
        lines += [f"      coll_{c:02d}: {{<<: *options, limit: {c + 1}}}" for c in range(49)]
        lines.append("      same: *options")
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    collections = [c for database in config.databases.values() for c in database.collections.values()]
    assert len(collections) == 5001
    assert all(c.tags == {"team": "data", "owner": "alice", "tier": "gold"} for c in collections)
    assert all(c.projection == tuple(f"field_{i}" for i in range(10)) for c in collections)
    assert [c.limit for c in config.databases["db_099"].collections.values()] == [*range(1, 50), None]


# type, options (a YAML flow mapping, one key to a line), then each unknown option and the name suggested for it.
DESTINATION_OPTIONS = [
    ("duckdb", {"create_indexes": "true", "naming_convention": "snake_case"}, {}),
    ("duckdb", {"create_index": "true"}, {"create_index": "create_indexes"}),
    ("bigquery", {"http_timeout": "20", "truncate_tables_on_staging_destination_before_load": "false"}, {}),
    ("bigquery", {"locaton": "EU", "autodetect_schema": "true", "http_timout": "20"},
     {"locaton": "location", "http_timout": "http_timeout"}),
    ("postgres", {"csv_format": "{delimiter: ';'}", "create_indexes": "false"}, {}),
    ("postgres", {"create_indices": "false"}, {"create_indices": "create_indexes"}),
    ("filesystem", {"bucket_url": "'file:///tmp/lake'", "layout": "'{table_name}/{load_id}.{ext}'"}, {}),
    ("filesystem", {"bucket_uri": "'file:///tmp/lake'"}, {"bucket_uri": "bucket_url"}),
]


def destination_yaml(kind: str, options: dict[str, str]) -> str:
    lines = [f"    {key}: {value}" for key, value in options.items()]
    return "\n".join(["destination:", f"  type: {kind}", "  options:", *lines, "databases:", "  db: [c]", ""])


@pytest.mark.parametrize(("kind", "options", "unknown"), DESTINATION_OPTIONS)
def test_destination_options_are_what_dlt_accepts(
    tmp_path: Path, kind: str, options: dict[str, str], unknown: dict[str, str]
) -> None:
    path = write(tmp_path, destination_yaml(kind, options))
    if not unknown:
        given = load_config(path).destination.options
        assert set(given) == set(options)
        # dlt keeps every one of them (it drops what it does not know with a log warning).
        factory = Destination.from_reference(kind, **given)
        assert set(factory.config_params) | set(factory.caps_params) == set(options)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = {error.key: error for error in info.value.errors}
    assert set(problems) == {f"destination.options.{key}" for key in unknown}, str(info.value)
    for key, suggested in unknown.items():
        error = problems[f"destination.options.{key}"]
        assert error.line == 4 + list(options).index(key)
        assert error.problem.startswith(f"unknown option {key!r} (did you mean {suggested}?): dlt's {kind} ")
        assert "credentials" not in error.problem
        # Without the check, dlt would have dropped it.
        factory = Destination.from_reference(kind, **{key: options[key]})
        assert key not in factory.config_params and key not in factory.caps_params


def test_options_of_a_custom_destination_are_passed_unchecked(tmp_path: Path) -> None:
    path = write(tmp_path, destination_yaml("my_package.sinks.warehouse", {"anything_it_takes": "1"}))
    assert load_config(path).destination.options == {"anything_it_takes": 1}


def test_options_of_an_unknown_destination_type_are_not_checked(tmp_path: Path) -> None:
    path = write(tmp_path, destination_yaml("bigquerry", {"locaton": "EU"}))
    error = refused(path)
    assert (error.key, error.line) == ("destination.type", 2)
    assert "did you mean bigquery?" in error.problem
