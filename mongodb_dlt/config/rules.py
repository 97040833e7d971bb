"""What a YAML option's value may be, beyond its type, and which options cannot go together: sizes, Extended JSON
initial values, projections that would lose documents, partitions' and incremental's conflicts with the write
disposition, cron strings, and dlt's destination names and options. The models (models.py) call these; resolve.py
reports their conflicts at the level that set the option.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from bson import Binary, Decimal128, ObjectId, Regex, Timestamp, json_util

if TYPE_CHECKING:
    from mongodb_dlt.config.models import IncrementalConfig, PartitionsConfig

_ISO_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_EXTENDED_JSON = json_util.JSONOptions(tz_aware=True, tzinfo=dt.UTC)
SIZE = re.compile(r"(?i)(?P<number>\d+(\.\d+)?)\s*(?P<unit>b|kb|mb|gb|tb|kib|mib|gib|tib)")
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}

def size_in_bytes(text: str) -> int:
    found = SIZE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a size")
    return int(float(found["number"]) * _UNITS[found["unit"].lower()])


def name_tuple(value: Any, *, separator: str | None = None) -> Any:
    """A name or a list of names as a tuple; anything else is left for pydantic to reject."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split(separator)) if separator else (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


def as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def parse_initial_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if isinstance(value, dt.date):
        # BSON has no date-only type: an unquoted YAML date means midnight UTC (quote it to keep a string).
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, str) and _ISO_WITH_TIME.match(value):
        try:
            return as_utc(dt.datetime.fromisoformat(value))
        except ValueError as error:
            raise ValueError(f"{value!r} looks like an ISO-8601 timestamp but is not one: {error}") from None
    return value


def from_extended_json(value: Any) -> Any:
    """MongoDB extended JSON ({"$oid": ...}, {"$date": ...}) to BSON types, innermost first."""
    if isinstance(value, dict):
        converted = {key: from_extended_json(item) for key, item in value.items()}
        if any(isinstance(key, str) and key.startswith("$") for key in converted):
            try:
                return json_util.object_hook(converted, _EXTENDED_JSON)
            except Exception as error:
                raise ValueError(f"invalid MongoDB extended JSON {converted!r}: {error}") from None
        return converted
    if isinstance(value, list):
        return [from_extended_json(item) for item in value]
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value


def is_nan(value: Any) -> bool:
    if isinstance(value, Decimal128):
        return value.to_decimal().is_nan()
    return isinstance(value, float) and math.isnan(value)


def initial_value_problem(value: Any) -> str | None:
    """Why ``value`` cannot be where an incremental read starts, or None. It must be a single value MongoDB
    compares by range: a document, an array, NaN or a regular expression has no place to start from."""
    if isinstance(value, dict | list):
        return "a document or an array has no single place in MongoDB's order to start from"
    if is_nan(value):
        return "MongoDB's $gte NaN matches NaN alone"
    if isinstance(value, Regex):
        return "MongoDB cannot select regular expressions by range"
    if isinstance(value, bool | int | float | str | dt.datetime | ObjectId | Decimal128 | Timestamp | Binary):
        return None
    return f"a {type(value).__name__} is not a value a read starts from"


INITIAL_VALUE_TYPES: Final = (
    "a number, a string, a date-time, an ObjectId ({$oid: ...}), a boolean, a timestamp ({$timestamp: ...}) or "
    "binary data"
)


def show_projection(projection: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{key}: {value!r}" for key, value in projection.items()) + "}"


def projection_change(projection: dict[str, Any], field: str) -> str | None:
    """How a projection document changes ``field`` ("leaves out", "keeps only part of", "rewrites"), or None when
    the field comes back whole. MongoDB's rules: a document of inclusions returns only the fields it names (and
    ``_id`` unless ``_id: 0``), one of exclusions (0 or false) returns all others; a value that is not a plain 1/0
    (``$slice``, ``$elemMatch``, an expression, a positional ``a.$``) rewrites its field."""
    inclusion = any(value not in (0, False) for key, value in projection.items() if key != "_id")
    kept_whole = not inclusion or field == "_id" or field.startswith("_id.")
    for key, value in projection.items():
        parent, child = field == key or field.startswith(f"{key}."), key.startswith(f"{field}.")
        if not (parent or child):
            continue
        plain = isinstance(value, bool | int | float) and "$" not in key
        if not plain:
            return "rewrites"
        if value in (0, False):
            return "leaves out" if parent else "keeps only part of"
        if parent:
            kept_whole = True
        elif not kept_whole:
            return "keeps only part of"
    return None if kept_whole else "leaves out"


def option_conflicts(
    write_disposition: str,
    primary_key: tuple[str, ...],
    incremental: IncrementalConfig | None,
    projection: tuple[str, ...] | dict[str, Any] | None = None,
    partitions: PartitionsConfig | None = None,
) -> list[tuple[tuple[str, ...], str]]:
    """Combinations of options that are each valid alone: (the options involved, the problem)."""
    conflicts = []
    if partitions is not None:
        conflicts.extend(partition_conflicts(write_disposition, incremental, partitions))
    if isinstance(projection, dict):
        conflicts.extend(projection_conflicts(write_disposition, primary_key, incremental, projection))
    if incremental is not None and write_disposition == "replace":
        problem = (
            "incremental with write_disposition replace would lose data: every run would replace the whole table "
            "with only the documents newer than the cursor; use append or merge"
        )
        conflicts.append((("incremental", "write_disposition"), problem))
    if write_disposition == "merge" and not primary_key:
        problem = (
            "write_disposition merge needs a primary_key to match documents on (e.g. _id); give one, or use append "
            "or replace"
        )
        conflicts.append((("primary_key", "write_disposition"), problem))
    return conflicts


def partition_conflicts(
    write_disposition: str, incremental: IncrementalConfig | None, partitions: PartitionsConfig
) -> list[tuple[tuple[str, ...], str]]:
    """A partition replaces its window's rows (dlt's merge, delete-insert on the window): that is a merge, and it
    reads its window whole."""
    conflicts = []
    if write_disposition != "merge":
        lost = (
            "append would add a window's rows again on every re-run"
            if write_disposition == "append"
            else "replace would keep the last window's rows only, dropping every other window's"
        )
        problem = (
            f"partitions with write_disposition {write_disposition}: each partition run replaces its own window's "
            f"rows (a merge on the window), so {lost}; leave write_disposition merge for a partitioned collection"
        )
        conflicts.append((("partitions", "write_disposition"), problem))
    if incremental is not None:
        problem = (
            "partitions with incremental: a partition reads its whole window each time it runs, so a re-run can "
            "replace the window exactly; an incremental cursor would skip the documents it already read. Use one "
            f"or the other (partitions by {partitions.by} already read only the window's documents)"
        )
        conflicts.append((("partitions", "incremental"), problem))
    return conflicts


def projection_conflicts(
    write_disposition: str,
    primary_key: tuple[str, ...],
    incremental: IncrementalConfig | None,
    projection: dict[str, Any],
) -> list[tuple[tuple[str, ...], str]]:
    """A projection document that drops or changes a field the read needs: the primary key under merge (it tells
    the documents apart) or incremental (it de-duplicates the boundary), and the incremental cursor."""
    needed: list[tuple[str, tuple[str, ...], str]] = []
    if write_disposition == "merge":
        needed += [
            (key, ("projection", "primary_key", "write_disposition"), "which primary_key uses to tell documents "
             "apart under write_disposition merge: documents would merge into one row")
            for key in primary_key
        ]
    elif incremental is not None:
        needed += [
            (key, ("projection", "primary_key", "incremental"), "which primary_key uses to tell apart the "
             "documents at the incremental cursor's last value: they would be skipped or loaded twice")
            for key in primary_key
        ]
    if incremental is not None:
        needed.append(
            (incremental.cursor_field, ("projection", "incremental"), "the incremental cursor_field: the reads "
             "would lose their place")
        )
    conflicts = []
    for field_name, options, why in needed:
        change = projection_change(projection, field_name)
        if change is not None:
            problem = (
                f"projection {show_projection(projection)} {change} {field_name}, {why}; keep {field_name} whole "
                "in the projection, or give the projection as a list of fields (a list always keeps _id, "
                "primary_key and the cursor_field)"
            )
            conflicts.append((options, problem))
    return conflicts


def is_valid_cron(expression: str) -> bool:
    try:
        from dagster._utils.schedules import is_valid_cron_string
    except ImportError:
        from croniter import croniter

        return bool(croniter.is_valid(expression))
    return bool(is_valid_cron_string(expression))


@functools.cache
def known_destinations() -> tuple[str, ...]:
    import dlt.destinations
    from dlt.common.destination import Destination

    return tuple(
        sorted(
            name
            for name in dir(dlt.destinations)
            if isinstance(factory := getattr(dlt.destinations, name), type)
            and issubclass(factory, Destination)
        )
    )


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """`` (did you mean X?)`` with the name in ``names`` closest to ``name``, or nothing when none is close."""
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@functools.cache
def destination_options(kind: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """What dlt's destination ``kind`` (a name in ``dlt.destinations``) takes as keyword arguments: the fields of
    its configuration spec, and every name it accepts (those and the capability overrides).
    dlt drops any other argument with only a log warning."""
    import dlt.destinations
    from dlt.common.destination.capabilities import DestinationCapabilitiesContext

    settings = tuple(getattr(dlt.destinations, kind)().spec.get_resolvable_fields())
    return settings, frozenset(settings) | frozenset(DestinationCapabilitiesContext.get_resolvable_fields())
