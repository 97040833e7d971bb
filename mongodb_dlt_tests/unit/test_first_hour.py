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
from mongodb_dlt.config import ConfigError, load_config, resolve_connection_url
from mongodb_dlt_tests.readme import README, code_block


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


NOT_A_URL = "is not a MongoDB connection URL: "


@pytest.mark.parametrize(
    ("yaml", "environment", "line", "key", "problem"),
    [
        pytest.param(
            "databases:\n  shop: [orders]\n",
            {"MONGODB_URI": "mongo://etl:Pa55word@db.internal/"},
            1,
            "databases",
            f"'mongo://etl:****@db.internal/' (from environment variable MONGODB_URI) {NOT_A_URL}Invalid URI scheme: "
            "URI must begin with 'mongodb://' or 'mongodb+srv://' (the built-in default connection_url, for every "
            "database without its own)",
            id="built-in-default-scheme",
        ),
        pytest.param(
            "defaults:\n  connection_url: ${MONGODB_URI}\ndatabases:\n  shop: [orders]\n  crm: [people]\n",
            {"MONGODB_URI": "mongodb://etl:Pa55@word@db.internal/"},
            2,
            "defaults.connection_url",
            f"'mongodb://etl:****@db.internal/' (from environment variable MONGODB_URI) {NOT_A_URL}Username and "
            "password must be escaped according to RFC 3986, use urllib.parse.quote_plus",
            id="unescaped-at-once-for-two-databases",
        ),
        pytest.param(
            "databases:\n  shop:\n    connection_url: mongodb://${USER_PW}@${HOST}/x\n    collections: [orders]\n",
            {"USER_PW": "etl:Pa55/w$rd", "HOST": "db.internal"},
            3,
            "databases.shop.connection_url",
            f"'mongodb://etl:****@db.internal/x' (from environment variables USER_PW, HOST) {NOT_A_URL}Bad database "
            'name "****@db"',
            id="unescaped-slash-in-a-password",
        ),
        pytest.param(
            "databases:\n  shop:\n    connection_url: mongodb+srv://db.example.com:27017/\n    collections: [a]\n",
            {},
            3,
            "databases.shop.connection_url",
            f"'mongodb+srv://db.example.com:27017/' {NOT_A_URL}mongodb+srv:// URIs must not include a port number",
            id="literal-srv-with-a-port",
        ),
    ],
)
def test_a_connection_url_pymongo_would_refuse_is_refused_where_it_was_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    yaml: str,
    environment: dict[str, str],
    line: int,
    key: str,
    problem: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "databases.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [(e.path, e.line, e.key, e.problem) for e in raised.value.errors] == [(path, line, key, problem)]
    assert "Pa55" not in str(raised.value) and "w$rd" not in str(raised.value)


def test_an_srv_url_is_checked_without_looking_its_name_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://etl:Pa55word@cluster0.example.invalid/?retryWrites=true")
    path = tmp_path / "databases.yaml"
    path.write_text("databases:\n  shop: [orders]\n")
    with monkeypatch.context() as offline:
        offline.setattr("dns.resolver.resolve", lambda *args, **kwargs: pytest.fail("validation looked a name up"))
        collection = load_config(path).databases["shop"].collections["orders"]
        assert resolve_connection_url(collection).startswith("mongodb+srv://etl:Pa55word@cluster0.example.invalid/")


def test_a_run_resolving_a_url_pymongo_would_refuse_says_where_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text("defaults:\n  connection_url: ${MONGODB_URI}\ndatabases:\n  shop: [orders]\n")
    monkeypatch.delenv("MONGODB_URI", raising=False)
    orders = load_config(path).databases["shop"].collections["orders"]  # definitions load without the variable
    monkeypatch.setenv("MONGODB_URI", "mongo://etl:Pa55word@db.internal/")
    with pytest.raises(ConfigError) as raised:
        resolve_connection_url(orders)
    assert (raised.value.path, raised.value.line, raised.value.key) == (path, 2, "defaults.connection_url")
    assert raised.value.problem == (
        f"'mongo://etl:****@db.internal/' (from environment variable MONGODB_URI) {NOT_A_URL}Invalid URI scheme: URI "
        "must begin with 'mongodb://' or 'mongodb+srv://'; it is the connection_url of database 'shop', needed to "
        "load collection 'orders'"
    )


@pytest.mark.parametrize(
    ("primary_key", "problem"),
    [
        ("5", "expected a field name or a list of field names, got 5 (quote it in the YAML)"),
        ("{field: order_id}", "expected a field name or a list of field names, got a mapping"),
    ],
)
def test_primary_key_is_a_field_name_or_a_list_of_them_as_readme_says(
    tmp_path: Path, primary_key: str, problem: str
) -> None:
    assert "| `primary_key` | `_id` | field or list of fields" in README.read_text()
    path = tmp_path / "databases.yaml"
    path.write_text(f"databases:\n  shop:\n    collections:\n      orders: {{primary_key: order_id}}\n"
                    f"      lines: {{primary_key: [order_id, line]}}\n      bad: {{primary_key: {primary_key}}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [(e.line, e.key, e.problem) for e in raised.value.errors] == [
        (6, "databases.shop.collections.bad.primary_key", problem)
    ]
    path.write_text(path.read_text().rpartition("      bad:")[0])
    collections = load_config(path).databases["shop"].collections
    assert collections["orders"].primary_key == ("order_id",)
    assert collections["lines"].primary_key == ("order_id", "line")


def test_readmes_validate_example_is_what_validate_prints_for_the_shipped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # README's example: the shipped config/databases.yaml with transactions' write_disposition mistyped
    [example] = code_block("Checking the YAML").splitlines()
    shipped = README.parent / "config" / "databases.yaml"
    (tmp_path / "config").mkdir()
    text = shipped.read_text()
    assert text.count("write_disposition: append") == 1
    mistyped = text.replace("write_disposition: append", "write_disposition: upsert")
    (tmp_path / "config" / "databases.yaml").write_text(mistyped)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--config", "config/databases.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [example]
