"""The YAML's options as pydantic models: each option's type, default and reason written once, on its field.

A model checks what one value can be checked for alone (types, bounds, cron strings, durations, destination
names, extended JSON in a filter); where options combine across levels, and which line a problem is on, is
resolve.py's and document.py's business; what a value may be beyond its type, and which options conflict, is
rules.py's. ``default_of`` reads a default back, so nothing repeats one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mongodb_dlt.config.rules import (
    INITIAL_VALUE_TYPES,
    SIZE,
    destination_options,
    did_you_mean,
    from_extended_json,
    initial_value_problem,
    is_valid_cron,
    known_destinations,
    name_tuple,
    option_conflicts,
    parse_initial_value,
    size_in_bytes,
)
from mongodb_dlt.naming import DAGSTER_NAME, default_dataset, default_key_prefix, default_table_name, stored_dataset
from mongodb_dlt.naming import asset_name as asset_name_for
from mongodb_dlt.naming import op_name as op_name_for

CONFIG_PATH_ENV: Final = "MONGODB_DLT_CONFIG"
DEFAULT_CONFIG_PATH: Final = "config/databases.yaml"
TOP_LEVEL_KEYS: Final = ("defaults", "destination", "dataset_prefix", "databases")

WriteDisposition = Literal["merge", "append", "replace"]
PartitionEvery = Literal["hour", "day", "week", "month"]
ContractMode = Literal["evolve", "freeze", "discard_row", "discard_value"]
ContractEntity = Literal["tables", "columns", "data_type"]

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_DOTTED_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_DATABASE_FORBIDDEN_CHARS = frozenset('/\\. "$*<>:|?\0')
_MAX_DATABASE_NAME_BYTES = 63
DEFAULT_CHUNK_SIZE: Final = "512MB"
"""Measured with benchmarks/resume_after_kill.py (README, Big collections): a package costs 0.5-1.5 s whatever it
holds (DuckDB's checkpoint as the loader lets go of the file, dlt's work per step), so chunks of this size keep that
near 5% of a load, while a kill loses at most this much reading (~15-20 s here)."""


def default_of(model: type[BaseModel], field: str) -> Any:
    """The value ``field`` of ``model`` takes when no level of the YAML gives it."""
    return model.model_fields[field].get_default(call_default_factory=True)


def show_value(value: Any) -> str:
    """A value as a message names it: what kind of thing it is, or its repr cut to 80 characters."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryConfig(_Frozen):
    """How often a collection is retried within one run when its error is transient."""

    max_attempts: int = Field(3, ge=1, description="attempts per run when the error is transient (1 = no retry)")
    backoff_seconds: float = Field(
        2.0, ge=0, description="wait before the 2nd attempt; doubles after every failed attempt"
    )


class IncrementalConfig(_Frozen):
    """Load only documents whose ``cursor_field`` is at or past the last value seen (kept in dlt state)."""

    cursor_field: str = Field(min_length=1)
    initial_value: Any = Field(None, description="where the first run starts; None: no lower bound")

    @field_validator("initial_value", mode="before")
    @classmethod
    def _initial_value(cls, value: Any) -> Any:
        value = parse_initial_value(from_extended_json(value))
        problem = None if value is None else initial_value_problem(value)
        if problem is not None:
            raise ValueError(f"{show_value(value)} cannot be an initial_value: {problem}; give {INITIAL_VALUE_TYPES}")
        return value


_EVERY_BOUNDARY: Final = {
    "hour": "on the hour (minutes and seconds zero)",
    "day": "at midnight UTC",
    "week": "at midnight UTC (weeks then start on its weekday)",
    "month": "at midnight UTC on day 1 to 28 of a month (months then start on that day)",
}


class PartitionsConfig(_Frozen):
    """Dagster time-window partitions: a partition reads the documents whose ``by`` is in its window (``$gte`` its
    start, ``$lt`` its end, in UTC) and replaces that window's rows; ``by: _id`` windows the ObjectId's creation
    time."""

    by: str = Field(description="the date-time field that places a document in a window; _id: ObjectId time")
    every: PartitionEvery = Field(description="window length: hour, day, week or month")
    start: dt.datetime = Field(description="the first window's start (UTC), at a window boundary")

    @field_validator("by")
    @classmethod
    def _field_path(cls, value: str) -> str:
        parts = value.split(".")
        if not value or any(not part for part in parts) or any(part.startswith("$") for part in parts):
            raise ValueError(
                f"{show_value(value)} is not a field path: give a field name such as created_at or meta.created_at "
                "(no empty part, none starting with $), or _id for the ObjectId's creation time"
            )
        return value

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{show_value(value)} is not a date or date-time: give an ISO-8601 value such as "
                    '"2023-01-01" or "2023-01-01T06:00:00Z"'
                ) from None
        if isinstance(value, dt.date):
            # a date means midnight UTC; a date-time with an offset is the same instant in UTC
            return parse_initial_value(value).astimezone(dt.UTC)
        return value

    @model_validator(mode="after")
    def _aligned(self) -> PartitionsConfig:
        start = self.start
        misaligned = start.minute or start.second or start.microsecond or (self.every != "hour" and start.hour)
        if misaligned or (self.every == "month" and start.day > 28):
            raise ValueError(
                f"start {start.isoformat()} is not where a window of one {self.every} begins: give a start "
                f"{_EVERY_BOUNDARY[self.every]}"
            )
        return self


class FreshnessConfig(_Frozen):
    """Dagster's freshness policy for the collection's asset: it fails once its last materialization is older
    than ``max_lag`` (and warns after ``warn_after``, when given)."""

    max_lag: dt.timedelta
    warn_after: dt.timedelta | None = Field(None, description="None: no warning before max_lag")

    @field_validator("max_lag", "warn_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        match = _DURATION.match(value) if isinstance(value, str) and value else None
        if match is None or not any(match.groupdict().values()):
            if isinstance(value, str):
                raise ValueError(f"{show_value(value)} is not a duration such as 2h, 30m, 1d or 1h30m")
            return value
        parts = {unit: int(amount) for unit, amount in match.groupdict().items() if amount}
        return dt.timedelta(
            days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0)
        )

    @model_validator(mode="after")
    def _ordered(self) -> FreshnessConfig:
        if self.max_lag <= dt.timedelta(0):
            raise ValueError("max_lag must be longer than zero")
        if self.warn_after is not None and self.warn_after >= self.max_lag:
            raise ValueError("warn_after must be shorter than max_lag")
        return self


class CollectionOptions(_Frozen):
    """The options `defaults`, a database and a collection may each give; unset ones are inherited."""

    write_disposition: WriteDisposition = Field(
        "merge", description="merge upserts on primary_key, so re-runs never duplicate documents"
    )
    primary_key: tuple[str, ...] = Field(("_id",), description="MongoDB's own document identity")
    filter: dict[str, Any] = Field(default_factory=dict, description="query document; empty: every document")
    projection: tuple[str, ...] | dict[str, Any] | None = Field(
        None, description="None: every field", json_schema_extra={"readme_default": "all fields"}
    )
    limit: int | None = Field(None, gt=0, description="None: no cap on documents per run")
    incremental: IncrementalConfig | None = Field(None, description="None: read the whole collection every run")
    batch_size: int = Field(1000, gt=0, description="documents per cursor batch and per page handed to dlt")
    chunk_size: int | str | None = Field(
        DEFAULT_CHUNK_SIZE,
        description="documents (a number) or BSON bytes read (a size: 512MB) per load package; null: one package "
        "per run",
    )
    comment: str | None = Field(
        None,
        min_length=1,
        description="None: the reads carry no comment; a text tags them in the server's currentOp, profiler and logs",
    )
    max_table_nesting: int = Field(
        2, ge=0, description="sub-documents deeper than this land as JSON instead of child tables"
    )
    json_paths: tuple[str, ...] = Field((), description="dotted paths always stored as JSON")
    max_object_keys: int = Field(64, gt=0, description="more keys than this: a data-keyed map, stored as JSON")
    schema_contract: ContractMode | dict[ContractEntity, ContractMode] | None = Field(
        None,
        description="None: dlt's default, evolve: new tables, columns and types are added",
        json_schema_extra={"readme_default": "evolve"},
    )
    retries: RetryConfig = Field(default_factory=RetryConfig, description="retries of transient errors")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Dagster asset tags; the only option merged across levels"
    )
    description: str | None = Field(
        None,
        description="None: the translator writes one naming the collection and its table",
        json_schema_extra={"readme_default": "generated"},
    )
    table_name: str | None = Field(
        None,
        min_length=1,
        description="None: the asset name (naming.default_table_name)",
        json_schema_extra={"readme_default": "asset name"},
    )
    asset_name: str | None = Field(
        None,
        pattern=DAGSTER_NAME,
        description="None: the collection name, characters outside [A-Za-z0-9_] as _; names the asset (last key "
        "part) and the dlt pipeline, so two collections may not share one",
        json_schema_extra={"readme_default": "collection name"},
    )
    freshness: FreshnessConfig | None = Field(
        None, description="None: no policy; {max_lag: 2h} makes Dagster flag the asset once it is older"
    )
    partitions: PartitionsConfig | None = Field(
        None, description="None: one asset materialization reads the whole collection; {by, every, start}: Dagster "
        "time-window partitions, each replacing its window's rows"
    )

    @property
    def merges(self) -> bool:
        """Upserts on the primary key (``merge``): the table holds one row per document."""
        return self.write_disposition == "merge"

    @property
    def reads_whole_collection(self) -> bool:
        """A merge or replace collection without incremental reads every document its filter matches on each run,
        so its root table should hold as many documents as MongoDB does; any other adds what it reads."""
        return self.incremental is None and self.partitions is None and self.write_disposition in ("merge", "replace")

    @property
    def chunked(self) -> bool:
        """Reads in chunks, each committed with its progress (``chunk_size``): not ``replace``, which swaps the
        whole table in one load, nor a ``limit``, which caps one run."""
        return self.chunk_size is not None and self.write_disposition != "replace" and self.limit is None

    @property
    def chunk_documents(self) -> int | None:
        """``chunk_size`` given as documents, else None."""
        return self.chunk_size if isinstance(self.chunk_size, int) else None

    @property
    def chunk_bytes(self) -> int | None:
        """``chunk_size`` given as a size, in bytes, else None."""
        return size_in_bytes(self.chunk_size) if isinstance(self.chunk_size, str) else None

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk_size(cls, value: Any) -> Any:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        if isinstance(value, str) and SIZE.fullmatch(value.strip()):
            if size_in_bytes(value) <= 0:
                raise ValueError(f"{value!r} is no size: give more than 0 bytes")
            return value.strip()
        raise ValueError(
            f"expected a number of documents (250000) or a size in bytes (512MB, 1GB), got {show_value(value)}"
        )

    @field_validator("json_paths", mode="before")
    @classmethod
    def _name_list(cls, value: Any) -> Any:
        return name_tuple(value)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _primary_key(cls, value: Any) -> Any:
        # Worded as README gives it: pydantic would only say it expected a list.
        if value is None or isinstance(value, str | list | tuple):
            return name_tuple(value)
        quote = " (quote it in the YAML)" if isinstance(value, int | float) else ""
        raise ValueError(f"expected a field name or a list of field names, got {show_value(value)}{quote}")

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> Any:
        if value is None:
            return {}
        converted = from_extended_json(value)
        if isinstance(value, dict) and not isinstance(converted, dict):
            raise ValueError("expected a query document such as {status: active}, not a single value")
        return converted

    @field_validator("schema_contract", mode="before")
    @classmethod
    def _schema_contract(cls, value: Any) -> Any:
        # Checked here so the union below never produces one error per member.
        modes, entities = get_args(ContractMode), get_args(ContractEntity)
        if value is None or value in modes:
            return value
        if isinstance(value, dict) and all(k in entities and v in modes for k, v in value.items()):
            return value
        raise ValueError(
            f"{show_value(value)} is not a schema contract: give one of {', '.join(modes)}, "
            f"or a mapping of {', '.join(entities)} to one of them"
        )

    @field_validator("projection", mode="before")
    @classmethod
    def _projection(cls, value: Any) -> Any:
        # Checked here so the union below never produces one error per member.
        if value is None or isinstance(value, dict):
            return value
        fields = name_tuple(value)
        if isinstance(fields, tuple) and fields and all(isinstance(name, str) and name for name in fields):
            return fields
        raise ValueError("expected a list of field names or a mapping {field: 1 or 0}")


class _ConnectionOptions(_Frozen):
    connection_url: str = Field(
        "${MONGODB_URI}", description="resolved when a run needs it, so definitions load without the variable"
    )
    max_parallel_collections: int = Field(4, gt=0, description="collections of one database loading at once")


class CollectionConfig(CollectionOptions):
    """One collection with every option resolved: what the factory and the loader work from."""

    name: str
    database: str
    asset_name: str
    table_name: str
    connection_url: str = Field(
        default_of(_ConnectionOptions, "connection_url"), description="its database's, unresolved"
    )
    line: int | None = None
    # Where the YAML gave connection_url, so a run that cannot resolve it can say so.
    path: Path | None = None
    connection_url_line: int | None = None
    connection_url_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = dict(data)
            if data.get("asset_name") is None:
                data["asset_name"] = asset_name_for(data["name"])
            if data.get("table_name") is None:
                data["table_name"] = default_table_name(data["asset_name"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CollectionConfig:
        conflicts = option_conflicts(
            self.write_disposition, self.primary_key, self.incremental, self.projection, self.partitions
        )
        if conflicts:
            raise ValueError("; ".join(problem for _, problem in conflicts))
        return self


class DefaultsSection(CollectionOptions, _ConnectionOptions):
    """The top-level ``defaults:`` mapping."""


class _DatabaseOptions(_ConnectionOptions):
    dataset: str | None = Field(
        None,
        min_length=1,
        description="None: <dataset_prefix>_<database>, just <database> when dataset_prefix is empty",
        json_schema_extra={"readme_default": "<dataset_prefix>_<database>"},
    )
    key_prefix: tuple[str, ...] | None = Field(
        None, description="None: raw_<database>", json_schema_extra={"readme_default": "raw_<database>"}
    )
    schedule: str | None = Field(None, description="None: no schedule; materialize by hand or from a job")
    op_name: str | None = Field(
        None,
        pattern=DAGSTER_NAME,
        description="None: mongodb_<database>, characters outside [A-Za-z0-9_] as _; also names the database's "
        "<op_name>_job and <op_name>_schedule",
        json_schema_extra={"readme_default": "mongodb_<database>"},
    )

    @field_validator("key_prefix", mode="before")
    @classmethod
    def _key_prefix(cls, value: Any) -> Any:
        parts = name_tuple(value, separator="/")
        if isinstance(parts, tuple) and not all(parts):
            raise ValueError(f"{value!r} has an empty part: give names like raw_sales or raw/sales")
        return parts

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_cron(value):
            raise ValueError(f"{value!r} is not a valid cron schedule (five fields, e.g. '0 * * * *')")
        return value


class DatabaseSection(CollectionOptions, _DatabaseOptions):
    """A database's own mapping in the YAML, without its ``collections``."""


class DatabaseConfig(_DatabaseOptions):
    """One MongoDB database: one Dagster multi-asset loading into one dataset."""

    name: str
    dataset: str = Field(min_length=1, description="as the warehouse stores it (naming.stored_dataset)")
    key_prefix: tuple[str, ...]
    op_name: str
    collections: dict[str, CollectionConfig]
    line: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = dict(data)
            if data.get("dataset") is None:
                data["dataset"] = default_dataset(default_of(ProjectConfig, "dataset_prefix"), data["name"])
            elif isinstance(data["dataset"], str):
                data["dataset"] = stored_dataset(data["dataset"])
            if data.get("op_name") is None:
                data["op_name"] = op_name_for(data["name"])
            if data.get("key_prefix") is None:
                data["key_prefix"] = default_key_prefix(data["name"])
        return data


class DestinationConfig(_Frozen):
    """Where every database lands. Credentials never go here: dlt reads them from env vars or secrets.toml."""

    type: str = Field("duckdb", description="a dlt destination name, or the import path of a custom one")
    path: str | None = Field(
        "data/warehouse.duckdb", description="DuckDB's file; other destinations have none unless given one"
    )
    project: str | None = Field(None, description="BigQuery project id")
    location: str | None = Field(None, description="BigQuery location, e.g. EU")
    options: dict[str, Any] = Field(default_factory=dict, description="more arguments for dlt's destination")
    # Parquet keeps memory flat on large nested collections (DuckDB loading jsonl peaked at 13 GB on 200k
    # documents); dlt's BigQuery takes JSON columns only from jsonl (loader.py).
    loader_file_format: Literal["parquet", "jsonl", "csv", "insert_values"] | None = Field(
        None,
        description="None: parquet, except jsonl for BigQuery",
        json_schema_extra={"readme_default": "parquet, jsonl for BigQuery"},
    )
    # With DuckDB's own default (80% of RAM) merging 200k nested documents peaked at 690 MB and 2M at 3 GB;
    # 64MB held a 200k load at 420 MB.
    memory_limit: str | None = Field(
        "64MB",
        pattern=r"(?i)^\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)$",
        description="DuckDB only: memory a load may use before DuckDB spills to disk; null: DuckDB's default",
    )
    lock_timeout: float = Field(
        300.0, ge=0, description="DuckDB only: seconds a load waits for a file another process (an analyst) holds"
    )

    @model_validator(mode="before")
    @classmethod
    def _path_for_duckdb_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is None:
            duckdb = data.get("type", default_of(cls, "type")) == "duckdb"
            data = {**data, "path": default_of(cls, "path") if duckdb else None}
        return data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if _DOTTED_IMPORT_PATH.fullmatch(value):
            return value
        known = known_destinations()
        if value not in known:
            raise ValueError(
                f"unknown destination type {value!r}{did_you_mean(value, known)}; known: {', '.join(known)}, "
                "or the dotted import path of a custom destination"
            )
        return value

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type")
        # A custom destination (an import path) is the user's code: what it takes is not known without running it.
        if not options or kind is None or _DOTTED_IMPORT_PATH.fullmatch(kind):
            return options
        settings, accepted = destination_options(kind)
        listed = sorted(name for name in settings if name != "credentials")  # credentials never go in the YAML
        unknown = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "unknown_option",
                    "unknown option '{option}'{hint}: dlt's {kind} destination would ignore it; it takes {listed}, "
                    "or a capability of dlt's DestinationCapabilitiesContext",
                    {"option": key, "kind": kind, "hint": did_you_mean(key, listed), "listed": ", ".join(listed)},
                ),
                loc=(key,),
                input=value,
            )
            for key, value in options.items()
            if key not in accepted
        ]
        if unknown:
            # Raised as a ValidationError, pydantic keeps each problem at its own key: options.<key>.
            raise ValidationError.from_exception_data(cls.__name__, unknown)
        return options


class ProjectConfig(_Frozen):
    """The whole resolved YAML."""

    path: Path
    destination: DestinationConfig = Field(
        default_factory=DestinationConfig,
        description="where every database lands",
        json_schema_extra={"readme_default": "duckdb at data/warehouse.duckdb"},
    )
    dataset_prefix: str = Field("mongo", description="a database's dataset is <dataset_prefix>_<database>")
    databases: dict[str, DatabaseConfig]


def config_path() -> Path:
    """The YAML to load: env MONGODB_DLT_CONFIG, else config/databases.yaml."""
    return Path(os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def database_name_problem(name: str) -> str | None:
    """Why MongoDB would refuse ``name`` as a database name, or None."""
    if not name:
        return "a database name must not be empty"
    if len(name.encode()) > _MAX_DATABASE_NAME_BYTES:
        return f"database name {name!r} is longer than MongoDB's {_MAX_DATABASE_NAME_BYTES} bytes"
    bad = sorted(set(name) & _DATABASE_FORBIDDEN_CHARS)
    if bad:
        shown = ", ".join("NUL" if char == "\0" else repr(char) for char in bad)
        return f"database name {name!r} contains {shown}, which MongoDB forbids in database names"
    return None


def collection_name_problem(name: str) -> str | None:
    """Why MongoDB would refuse (or reserve) ``name`` as a collection name, or None."""
    if not name:
        return "a collection name must not be empty"
    if "$" in name:
        return f"collection name {name!r} contains '$', which MongoDB forbids"
    if "\0" in name:
        return f"collection name {name!r} contains NUL, which MongoDB forbids"
    if name.startswith("system."):
        return f"collection name {name!r} starts with 'system.', which MongoDB reserves for itself"
    return None
