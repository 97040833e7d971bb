"""The ``Definitions`` that ``dagster dev`` loads (``[tool.dagster] module_name``), built from the YAML.

Loading reads the YAML only: nothing connects to MongoDB or the destination until a run starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mongodb_dlt.config import ProjectConfig, load_config
from mongodb_dlt.factory import dlt_asset_factory, long_lived
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.naming import (
    ALL_COLLECTIONS_JOB,
    DESTINATION_TAG,
    LOADER_RESOURCE_KEY,
    MongoDltTranslator,
    database_job_name,
    destination_pool,
    schedule_name,
)

PIPELINES_DIR_ENV = "MONGODB_DLT_PIPELINES_DIR"
# When the instance has run retries enabled, a retry of these jobs repeats only the assets that failed.
RETRY_ONLY_FAILED_ASSETS = {"dagster/retry_strategy": "FROM_ASSET_FAILURE"}


def build_definitions(
    config: ProjectConfig,
    *,
    resource_key: str = LOADER_RESOURCE_KEY,
    all_collections_job: str = ALL_COLLECTIONS_JOB,
    base: Path | None = None,
    executor: bool = True,
    translator: MongoDltTranslator | None = None,
) -> dg.Definitions:
    """Everything Dagster needs to load the databases of ``config``, ready for ``dg.Definitions.merge``:

    - one multi-asset per database (``dlt_asset_factory``), bound to a ``MongoDltLoader`` under ``resource_key``;
    - a job over every collection, ``all_collections_job``, and a scheduled job per database with a ``schedule``;
    - with ``executor``, the multiprocess executor limited to one step per single-writer destination (DuckDB).
      A code location can have one executor only: pass ``executor=False`` when merging with definitions that set
      their own, or with a second set of these (DuckDB's file lock is then waited for instead, see README).

    Relative paths in ``config`` resolve against ``base`` (default: the working directory). ``translator`` names
    the assets (see ``naming.MongoDltTranslator``)."""
    assets = dlt_asset_factory(config, resource_key, translator)
    # A job runs one partitions definition: the jobs and schedules take the unpartitioned collections, and the
    # partitioned ones are materialized by partition (backfills, or a schedule of the user's own; README).
    unpartitioned = {assets_def.node_def.name: assets_def for assets_def in assets if assets_def.partitions_def is None}
    jobs = []
    if unpartitioned:
        jobs.append(
            dg.define_asset_job(
                all_collections_job,
                selection=dg.AssetSelection.assets(*unpartitioned.values()),
                tags=RETRY_ONLY_FAILED_ASSETS,
            )
        )
    schedules = []
    for database in config.databases.values():
        assets_def = unpartitioned.get(database.op_name)
        if database.schedule is None or assets_def is None:
            continue
        job = dg.define_asset_job(
            database_job_name(database.op_name),
            selection=dg.AssetSelection.assets(assets_def),
            tags=RETRY_ONLY_FAILED_ASSETS,
        )
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(name=schedule_name(database.op_name), job=job, cron_schedule=database.schedule)
        )
    loader = MongoDltLoader.from_config(config.destination, pipelines_dir=os.environ.get(PIPELINES_DIR_ENV), base=base)
    if not executor:
        return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources={resource_key: loader})
    step_executor = dg.multiprocess_executor
    if destination_pool(config.destination.type):
        # One writer per DuckDB file: databases of one run take turns; collections of one database still
        # load in parallel inside their op. Across runs, the ops' pool takes a limit of 1 (see README).
        step_executor = step_executor.configured(
            {"tag_concurrency_limits": [{"key": DESTINATION_TAG, "value": config.destination.type, "limit": 1}]},
            name="mongodb_dlt_executor",
        )
    return dg.Definitions(
        assets=assets, jobs=jobs, schedules=schedules, resources={resource_key: loader}, executor=step_executor
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Dagster calls this each time it loads the code location, so a YAML edit shows up on reload.

    Dagster resolves the definitions right after (``get_repository_def``, cached on them): doing it here, with the
    garbage collector paused as for the build (``long_lived``), spares the full collections that resolving a big
    YAML's graph would otherwise run (about a fifth of loading 5,000 collections). Not in ``build_definitions``,
    whose result may be merged first: Dagster would then resolve the merged definitions again."""
    with long_lived():
        definitions = build_definitions(load_config())
        definitions.get_repository_def()
    return definitions
