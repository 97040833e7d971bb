"""Every name mongodb-dlt makes, in one place: plain values in, plain values out.

Two kinds of names live here:

- **Warehouse names** (dataset, root table, dlt pipeline and schema): they decide where rows and state land,
  so they follow from the YAML alone and are not overridable in code; the YAML's ``dataset`` and
  ``table_name`` set them.
- **Dagster names** (asset key, group, description, deps, op, jobs, schedules, resource key, pool): made by a
  ``MongoDltTranslator``. Subclass it and pass an instance to ``build_definitions``, ``dlt_asset_factory`` or
  the component (``translator:``) to name assets your way, as with dagster-dlt's ``DagsterDltTranslator``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
"""Every dlt pipeline (one per collection) is named ``mongodb_dlt__<database>__<collection>``."""
SCHEMA_PREFIX = "mongodb_dlt_"
"""What ``schema_name`` makes of ``PIPELINE_PREFIX``: every schema of ours starts with it."""
DESTINATION_TAG = "mongodb_dlt/destination"
"""Op tag that the executor's tag_concurrency_limits key on for single-writer destinations."""
SINGLE_WRITER_DESTINATIONS = frozenset({"duckdb"})
"""Destinations that allow one writing process at a time."""

_NOT_IN_ASSET_NAME = re.compile(r"[^A-Za-z0-9_]")
_snake_case = SnakeCase()


# -- warehouse names: from the YAML only ------------------------------------------------------------------------


def asset_name(collection: str) -> str:
    """The collection name as Dagster asset-key part, output name and pipeline part: characters outside
    [A-Za-z0-9_] become ``_``."""
    return _NOT_IN_ASSET_NAME.sub("_", collection)


def default_table_name(collection: str) -> str:
    """A collection's table unless ``table_name`` says otherwise (dlt normalizes it further: ``root_table``)."""
    return asset_name(collection)


def default_dataset(dataset_prefix: str, database: str) -> str:
    """``<dataset_prefix>_<database>``, or just ``<database>`` when the prefix is empty."""
    return f"{dataset_prefix}_{database}" if dataset_prefix else database


def default_key_prefix(database: str) -> tuple[str, ...]:
    return (f"raw_{database}",)


def root_table(table_name: str) -> str:
    """The warehouse table a collection's documents land in: ``table_name`` as dlt's snake_case naming stores it.
    Child tables are ``<root table>__<array path>`` (extract/columns.py)."""
    return _snake_case.normalize_tables_path(table_name)


def pipeline_name(database: str, collection: str) -> str:
    """The collection's own dlt pipeline: its state and failures are its own."""
    return f"{PIPELINE_PREFIX}{database}__{asset_name(collection)}"


def schema_name(pipeline: str) -> str:
    """The dlt schema of a pipeline that extracts one standalone resource, as it is stored in the warehouse:
    ``mongodb_dlt_<database>_<collection>`` (dlt folds the double underscores)."""
    return normalize_schema_name(pipeline)

# -- Dagster names ----------------------------------------------------------------------------------------------


def op_name(database: str) -> str:
    """The database's multi-asset op: ``mongodb_<database>``."""
    return f"mongodb_{asset_name(database)}"


def database_job_name(database: str) -> str:
    return f"{op_name(database)}_job"


def schedule_name(database: str) -> str:
    return f"{op_name(database)}_schedule"


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
            f"`{database.dataset}.{collection.table_name}` ({how})."
        )

    def deps(self, database: DatabaseConfig, collection: CollectionConfig) -> Sequence[Sequence[str]]:
        """Upstream asset keys (each as its parts) the collection's asset depends on."""
        return ()
