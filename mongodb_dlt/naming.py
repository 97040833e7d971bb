"""Every name mongodb-dlt makes, in one place: plain values in, plain values out.

Two kinds of names live here:

- **Warehouse names** (dataset, root table, dlt pipeline and schema): they decide where rows and state land,
  so they follow from the YAML alone and are not overridable in code; the YAML's ``dataset``, ``table_name``
  and ``asset_name`` set them. Dataset and table are kept as dlt stores them (its snake_case naming folds case
  and punctuation: ``orderItems`` is ``order_items``), so that two names which land in one place compare equal.
- **Dagster names** (asset key, group, description, deps, op, jobs, schedules, resource key, pool): the op, jobs
  and schedules follow the database (``op_name`` sets them); the rest are made by a ``MongoDltTranslator``.
  Subclass it and pass an instance to ``build_definitions``, ``dlt_asset_factory`` or the component
  (``translator:``) to name assets your way, as with dagster-dlt's ``DagsterDltTranslator``.

No two collections may share a place: config/resolve.py refuses a YAML where two would (``collection_places``
lists the places), and the factory refuses a translator that gives two collections one asset key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCase
from dlt.common.schema.utils import normalize_schema_name

if TYPE_CHECKING:
    from mongodb_dlt.config import CollectionConfig, DatabaseConfig

LOADER_RESOURCE_KEY = "mongodb_dlt"
"""Resource key the loader is bound under by ``build_definitions`` (a component adds ``_<folder>``)."""
ALL_COLLECTIONS_JOB = "mongodb_all"
"""The job over every collection of one YAML (``<folder>_all_collections`` for a component)."""
PIPELINE_PREFIX = "mongodb_dlt__"
"""Every dlt pipeline (one per collection) is named ``mongodb_dlt__<database>__<asset name>``."""
SCHEMA_PREFIX = "mongodb_dlt_"
"""What ``schema_name`` makes of ``PIPELINE_PREFIX``: every schema of ours starts with it."""
DESTINATION_TAG = "mongodb_dlt/destination"
"""Op tag that the executor's tag_concurrency_limits key on for single-writer destinations."""
SINGLE_WRITER_DESTINATIONS = frozenset({"duckdb"})
"""Destinations that allow one writing process at a time."""

DLT_TABLE_PREFIX = "_dlt"
"""dlt's own tables (``_dlt_loads``, ``_dlt_version``, ``_dlt_pipeline_state``) and columns start with it: dlt
treats every table so named as its own, so no collection's table may."""
CHILD_TABLE_SEPARATOR = "__"
"""A child table is ``<root table>__<array path>`` (extract/columns.py)."""
STAGING_DATASET_SUFFIX = "_staging"
"""dlt stages merge loads in ``<dataset>_staging`` (its default ``staging_dataset_name_layout``), and empties it."""
DAGSTER_NAME = r"^[A-Za-z0-9_]+$"
"""What Dagster accepts as an op name or asset key part."""

_NOT_IN_ASSET_NAME = re.compile(r"[^A-Za-z0-9_]")
_snake_case = SnakeCase()


# -- warehouse names: from the YAML only ------------------------------------------------------------------------


def asset_name(collection: str) -> str:
    """The collection name as Dagster asset-key part, output name and pipeline part: characters outside
    [A-Za-z0-9_] become ``_``."""
    return _NOT_IN_ASSET_NAME.sub("_", collection)


def default_table_name(asset: str) -> str:
    """A collection's table unless ``table_name`` says otherwise: its asset name (the collection's name made an
    asset name unless ``asset_name`` says otherwise); dlt normalizes it further: ``root_table``."""
    return asset_name(asset)


def stored_dataset(dataset: str) -> str:
    """A dataset name as dlt creates it in the warehouse (``mongo_Shop`` is ``mongo_shop``): the name every load
    and every query of ours uses, so the two never differ."""
    return _snake_case.normalize_table_identifier(dataset)


def default_dataset(dataset_prefix: str, database: str) -> str:
    """``<dataset_prefix>_<database>``, or just ``<database>`` when the prefix is empty, as stored."""
    return stored_dataset(f"{dataset_prefix}_{database}" if dataset_prefix else database)


def staging_dataset(dataset: str) -> str:
    """Where dlt stages the merge loads of ``dataset`` (emptied after each load)."""
    return stored_dataset(dataset + STAGING_DATASET_SUFFIX)


def default_key_prefix(database: str) -> tuple[str, ...]:
    return (f"raw_{database}",)


def root_table(table_name: str) -> str:
    """The warehouse table a collection's documents land in: ``table_name`` as dlt's snake_case naming stores it.
    Child tables are ``<root table>__<array path>`` (extract/columns.py)."""
    return _snake_case.normalize_tables_path(table_name)


def reserved_table_problem(table: str) -> str | None:
    """Why a root table (as stored) may not be a collection's, or None."""
    if table.startswith(DLT_TABLE_PREFIX):
        return (
            f"table {table} starts with {DLT_TABLE_PREFIX}, which dlt reserves for its own tables (_dlt_loads, "
            "_dlt_version, _dlt_pipeline_state): loading into it would fail every run"
        )
    return None


def parent_tables(table: str) -> Iterator[str]:
    """Every ``p`` with ``table == p + "__" + rest``: root tables whose child tables could be named ``table``."""
    start = table.find(CHILD_TABLE_SEPARATOR, 1)
    while start > 0:
        yield table[:start]
        start = table.find(CHILD_TABLE_SEPARATOR, start + 1)


def pipeline_name(database: str, collection: str) -> str:
    """The collection's own dlt pipeline: its state and failures are its own. ``collection`` is the collection's
    ``asset_name`` (its name made an asset name unless the YAML sets ``asset_name``)."""
    return f"{PIPELINE_PREFIX}{database}__{asset_name(collection)}"


def schema_name(pipeline: str) -> str:
    """The dlt schema of a pipeline that extracts one standalone resource, as it is stored in the warehouse:
    ``mongodb_dlt_<database>_<collection>`` (dlt folds the double underscores)."""
    return normalize_schema_name(pipeline)


Place = tuple[str, ...]
"""Somewhere only one collection may be; its first part says what kind of place it is: ``asset``, ``pipeline``,
``table`` or ``schema``."""


def collection_places(database: str, dataset: str, key_prefix: Sequence[str], asset: str, table: str) -> list[Place]:
    """Where a collection's asset, state and rows are (``dataset`` and ``table`` as stored): two collections with
    one place in common would overwrite each other's rows or state, or fail the definitions. A child table prefix
    is a place of another shape (``parent_tables``)."""
    pipeline = pipeline_name(database, asset)
    return [
        ("asset", *key_prefix, asset),
        ("pipeline", pipeline),
        ("table", dataset, table),
        ("schema", dataset, schema_name(pipeline)),
    ]


def describe_place(place: Place) -> str:
    """What holding ``place`` means, for a message about two holders."""
    kind, *parts = place
    if kind == "asset":
        return f"get asset name {parts[-1]!r}, asset key {'/'.join(parts)}"
    if kind == "pipeline":
        return f"use dlt pipeline {parts[0]} (one state: one incremental cursor)"
    dataset, name = parts
    if kind == "table":
        return f"load into table {dataset}.{name} (one's rows would replace the other's)"
    return f"keep dlt schema {name} in dataset {dataset} (one would undo the other's loads)"


# -- Dagster names ----------------------------------------------------------------------------------------------


def op_name(database: str) -> str:
    """The database's multi-asset op: ``mongodb_<database>``."""
    return f"mongodb_{asset_name(database)}"


def partitioned_op_name(op: str, every: str, start: dt.datetime) -> str:
    """The multi-asset op of a database's collections partitioned alike (one window length ``every`` from one
    ``start``, UTC): ``<op>__<every>_<YYYYMMDD>``, e.g. ``mongodb_shop__day_20230101``, with ``T<HH>`` added for a
    start off midnight. ``op`` is the database's (``DatabaseConfig.op_name``); the double underscore keeps it apart
    from any database's own op, which config/resolve.py checks."""
    stamp = start.strftime("%Y%m%d") + (start.strftime("T%H") if start.hour else "")
    return f"{op}__{every}_{stamp}"


def partition_lock_name(pipeline: str, partition: str) -> str:
    """The lock (and working folder) of one partition's load of a collection: ``<pipeline>__p_<partition key>``,
    the key's characters outside [A-Za-z0-9_] as ``_`` (``2023-01-05`` -> ``2023_01_05``)."""
    return f"{pipeline}__p_{asset_name(partition)}"


def database_job_name(op: str) -> str:
    """The scheduled job of the database whose op is ``op`` (``DatabaseConfig.op_name``)."""
    return f"{op}_job"


def schedule_name(op: str) -> str:
    return f"{op}_schedule"


def destination_pool(destination_type: str) -> str | None:
    """The Dagster pool shared by every op writing to a single-writer destination (DuckDB), else None."""
    return f"mongodb_dlt_{destination_type}" if destination_type in SINGLE_WRITER_DESTINATIONS else None


def component_slug(folder_parts: Sequence[str]) -> str:
    """A component's folder under ``defs/`` as one identifier (``mongo/ingest`` -> ``mongo_ingest``)."""
    return _NOT_IN_ASSET_NAME.sub("_", "_".join(folder_parts)).strip("_") or "mongodb"


def component_resource_key(slug: str) -> str:
    return f"{LOADER_RESOURCE_KEY}_{slug}"


def component_job_name(slug: str) -> str:
    return f"{slug}_all_collections"


class MongoDltTranslator:
    """Makes the Dagster names of each collection's asset. Subclass it and override any method to name assets
    your way; every method takes the resolved database and collection config and returns plain values.

    The defaults: asset key ``<key_prefix>/<collection>`` (``raw_<database>/<collection>``), group
    ``<database>``, the configured ``description`` or one naming the collection and its table, no deps.
    """

    def asset_key(self, database: DatabaseConfig, collection: CollectionConfig) -> Sequence[str]:
        """The asset key's parts."""
        return (*database.key_prefix, collection.asset_name)

    def group_name(self, database: DatabaseConfig, collection: CollectionConfig) -> str:
        return asset_name(database.name)

    def description(self, database: DatabaseConfig, collection: CollectionConfig) -> str:
        if collection.description:
            return collection.description
        how = collection.write_disposition
        if collection.incremental:
            how += f", incremental on `{collection.incremental.cursor_field}`"
        return (
            f"MongoDB collection `{database.name}.{collection.name}` loaded by dlt into "
            f"`{database.dataset}.{root_table(collection.table_name)}` ({how})."
        )

    def deps(self, database: DatabaseConfig, collection: CollectionConfig) -> Sequence[Sequence[str]]:
        """Upstream asset keys (each as its parts) the collection's asset depends on."""
        return ()
