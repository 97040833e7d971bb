"""README.md's option tables against the models: every row is an option, every option a row, and each default
column says what the option's field defaults to, so the tables cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mongodb_dlt.config import CollectionOptions, DatabaseConfig, DestinationConfig, ProjectConfig
from mongodb_dlt.config.models import TOP_LEVEL_KEYS, DatabaseSection, DefaultsSection

README = Path(__file__).resolve().parents[2] / "README.md"
# | `key` | default | meaning |  (the default column never holds " | ")
_ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<default>.*?) \| .* \|$")


def readme_table(heading: str) -> dict[str, str]:
    """The table under ``### <heading>``: key -> its default column, without the backticks."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"### {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return {row["key"]: row["default"].replace("`", "") for line in lines[start:end] if (row := _ROW.match(line))}


def shown(value: Any) -> str:
    """A Python default as the README writes it: ``merge``, ``_id``, ``1000``, ``300``, ``{}``, ``[]``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return shown(value.model_dump())
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {shown(item)}" for key, item in value.items()) + "}"
    if isinstance(value, tuple | list):
        return shown(value[0]) if len(value) == 1 else "[" + ", ".join(shown(item) for item in value) + "]"
    return str(value)


def readme_default(field: FieldInfo) -> str:
    """What the README's default column should say for ``field``: a derived default is kept as text on the field
    (``json_schema_extra={"readme_default": ...}``), a required field says so, any other shows its value."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "readme_default" in extra:
        return str(extra["readme_default"])
    if field.is_required():
        return "required"
    return shown(field.get_default(call_default_factory=True))


def defaults_of(model: type[BaseModel], names: set[str]) -> dict[str, str]:
    return {name: readme_default(model.model_fields[name]) for name in names}


def expected_tables() -> dict[str, dict[str, str]]:
    """Per README heading, the option keys the YAML takes there and the default column each should show."""
    # ProjectConfig.path is the file the YAML came from, not a key in it; `defaults` is resolved away into every
    # collection, and absent it is a DefaultsSection that sets nothing.
    top_level = defaults_of(ProjectConfig, set(ProjectConfig.model_fields) - {"path"})
    top_level["defaults"] = shown(DefaultsSection().model_dump(exclude_unset=True))
    # A database's own options: its section's fields beyond the collection options it may also give, and the
    # `collections:` the resolver takes beside them.
    database = defaults_of(DatabaseSection, set(DatabaseSection.model_fields) - set(CollectionOptions.model_fields))
    database["collections"] = readme_default(DatabaseConfig.model_fields["collections"])
    return {
        "Top level": top_level,
        "`destination`": defaults_of(DestinationConfig, set(DestinationConfig.model_fields)),
        "Database options": database,
        "Collection options": defaults_of(CollectionOptions, set(CollectionOptions.model_fields)),
    }


def test_top_level_table_covers_the_top_level_keys() -> None:
    assert set(expected_tables()["Top level"]) == set(TOP_LEVEL_KEYS)


@pytest.mark.parametrize("heading", list(expected_tables()))
def test_readme_option_table_matches_the_models(heading: str) -> None:
    expected, table = expected_tables()[heading], readme_table(heading)
    unknown, missing = sorted(table.keys() - expected.keys()), sorted(expected.keys() - table.keys())
    assert not unknown, f"README rows under '### {heading}' that are no option there: {unknown}"
    assert not missing, f"options missing from the README table under '### {heading}': {missing}"
    wrong = {key: (table[key], expected[key]) for key in expected if table[key] != expected[key]}
    assert not wrong, f"README default column (README, model) under '### {heading}': {wrong}"
