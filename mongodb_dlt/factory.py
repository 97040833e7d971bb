"""``dlt_asset_factory``: one Dagster multi-asset per configured database, one asset per collection.

The factory only knows specs, selection, fan-out and results: names are the translator's (naming.py), reading
MongoDB is extract/'s job and loading is the loader resource's (load/). Selected collections load in parallel
threads (up to the database's ``max_parallel_collections``); each success is reported as soon as it lands, and the
step fails at the end with one error naming every failed collection, so Dagster records the siblings as
materialized and "re-execute from asset failure" repeats only the failed ones. Each collection's asset checks
(checks.py) are declared on the multi-asset and reported with its materialization; a failed collection reports
none.

A terminated run (Dagster interrupts the step: ``DagsterExecutionInterruptedError``) stops promptly: loads that have
not started their load step stop at their next safe point and write nothing, none starts after the signal, and the
step reports every load that committed, with its checks, before it lets the interruption end it (``LoadStop``
makes sure no load commits while the step is busy reporting).

A big YAML makes a big graph (5,000 collections: 15,000 op outputs with their check specs), so building it
avoids per-collection overhead (one warnings filter and one absolute path per YAML file for a database's specs)
and pauses the cyclic garbage collector while the graph is built (``long_lived``).
"""

import gc
import multiprocessing
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg

from mongodb_dlt.checks import (
    ROWS_MATCH_SOURCE,
    check_results,
    checks_without_their_asset,
    collection_check_specs,
    read_metadata,
)
from mongodb_dlt.config import CollectionConfig, DatabaseConfig, PartitionsConfig, ProjectConfig, resolve_connection_url
from mongodb_dlt.errors import ConfigError, MongoUnreachableError
from mongodb_dlt.extract.mongo import Window, check_reachable
from mongodb_dlt.load.loader import MongoDltLoader
from mongodb_dlt.load.stopping import LoadStop
from mongodb_dlt.naming import (
    DESTINATION_TAG,
    LOADER_RESOURCE_KEY,
    MongoDltTranslator,
    destination_pool,
    partitioned_op_name,
    root_table,
)
from mongodb_dlt.results import CollectionLoadResult

__all__ = ["DESTINATION_TAG", "LOADER_RESOURCE_KEY", "dlt_asset_factory"]


def collection_specs(
    config: ProjectConfig,
    database: DatabaseConfig,
    translator: MongoDltTranslator,
    collections: list[CollectionConfig] | None = None,
) -> list[dg.AssetSpec]:
    """The assets of ``collections`` (default: every collection of ``database``): names from ``translator``, table
    and origin as metadata. Built together: one warnings filter for all of them and one absolute path per YAML
    file."""
    collections = list(database.collections.values()) if collections is None else collections
    code_references = _CodeReferences(config)
    with _beta_ignored():
        references = [code_references(c) for c in collections]
    return [_collection_spec(config, database, c, translator, r) for c, r in zip(collections, references, strict=True)]


def _collection_spec(
    config: ProjectConfig,
    database: DatabaseConfig,
    collection: CollectionConfig,
    translator: MongoDltTranslator,
    code_references: dg.CodeReferencesMetadataValue,
) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=dg.AssetKey(list(translator.asset_key(database, collection))),
        group_name=translator.group_name(database, collection),
        kinds={"mongodb", config.destination.type},
        description=translator.description(database, collection),
        tags=dict(collection.tags),
        deps=[dg.AssetKey(list(parts)) for parts in translator.deps(database, collection)],
        metadata={
            "dagster/table_name": f"{database.dataset}.{root_table(collection.table_name)}",
            "mongodb/database": database.name,
            "mongodb/collection": collection.name,
            "write_disposition": collection.write_disposition,
            "dagster/code_references": code_references,
        },
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=collection.freshness.max_lag, warn_window=collection.freshness.warn_after
        )
        if collection.freshness
        else None,
    )


class _CodeReferences:
    """``dagster/code_references``: each collection's entry in its YAML file, for the UI's "open in editor". Each
    file's absolute path is worked out once, not once per collection."""

    def __init__(self, config: ProjectConfig) -> None:
        self._config = config
        self._files: dict[Path, str] = {}

    def __call__(self, collection: CollectionConfig) -> dg.CodeReferencesMetadataValue:
        path = collection.path or self._config.path
        file = self._files.get(path)
        if file is None:
            file = self._files[path] = str(Path(path).absolute())
        reference = dg.LocalFileCodeReference(file_path=file, line_number=collection.line)
        return dg.CodeReferencesMetadataValue(code_references=[reference])


@contextmanager
def _beta_ignored() -> Iterator[None]:
    """Code references are beta in Dagster 1.13: the warning would print on every definitions load, in every step
    process. Entered once per database rather than once per collection (each entry copies and later restores the
    process's warning filters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield


@contextmanager
def long_lived() -> Iterator[None]:
    """Pauses the cyclic garbage collector while definitions are built (the multi-assets here; ``definitions.defs``
    resolves its definitions inside it too), then files what was built in the oldest generation.

    Everything built here lives as long as the code location, and there is a lot of it (5,000 collections: about
    160,000 objects the collector tracks, most of them Dagster's: outputs, check specs and keys, metadata values).
    With the collector on, each time the heap grows by a quarter a full collection walks every object so far:
    loading 5,000 collections ran four, about 40% of the load's time. ``freeze`` then ``unfreeze`` move every
    object into the oldest generation without walking it through the young ones; nothing is leaked, the objects
    stay collectable by the next full collection. The state the collector was in is restored, and objects someone
    else froze stay frozen (the move is then skipped, as ``unfreeze`` would thaw them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def _cursor_before(result: CollectionLoadResult) -> str:
    if result.cursor_before is not None:
        return str(result.cursor_before)
    if result.cursor_initial_value is not None:
        return f"{result.cursor_initial_value} (initial_value: no state yet)"
    return "none (no state yet and no initial_value: every document with the cursor field is read)"


def _metadata(result: CollectionLoadResult) -> dict[str, Any]:
    root_paths = result.column_paths.get(result.table_name, {})
    metadata: dict[str, Any] = {
        "rows_loaded": dg.MetadataValue.int(result.rows_loaded),
        "documents_read": dg.MetadataValue.int(result.documents_read),
        "dagster/table_name": f"{result.dataset_name}.{result.table_name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name,
                    data_type,
                    description=root_paths.get(name),
                    constraints=dg.TableColumnConstraints(nullable=nullable),
                )
                for name, data_type, nullable in result.columns
            ]
        ),
        "child_tables": dg.MetadataValue.json(dict(sorted(result.child_tables.items()))),
        "column_map": dg.MetadataValue.json(result.column_paths),
        "duration_seconds": dg.MetadataValue.float(round(result.duration_seconds, 3)),
        "attempts": dg.MetadataValue.int(result.attempts),
        "schema_changes": dg.MetadataValue.md("\n".join(result.schema_changes) or "no changes"),
        "load_ids": dg.MetadataValue.text(", ".join(result.load_ids) or "nothing new to load"),
        **read_metadata(result),
    }
    if result.read.partition is not None:
        metadata["partition"] = dg.MetadataValue.text(result.read.partition)
        if result.read.outside_windows is not None:
            metadata["documents_outside_windows"] = dg.MetadataValue.int(result.read.outside_windows)
    if result.cursor_field:
        metadata["incremental_cursor_field"] = dg.MetadataValue.text(result.cursor_field)
        metadata["incremental_cursor_before"] = dg.MetadataValue.text(_cursor_before(result))
        metadata["incremental_cursor_after"] = dg.MetadataValue.text(str(result.cursor_after))
    return metadata


def _report_orphaned_run(context: dg.AssetExecutionContext, run_worker_pid: int | None) -> None:
    """The run's process died while this step loaded. A code server that launched it marks the run failed; when
    nothing did (``dagster asset materialize`` killed), a run left STARTED keeps its pool slots and blocks retries.
    The step has finished its loads (each exactly once), so it ends the run itself."""
    message = (
        f"The run's process (PID {run_worker_pid}) died while step {context.op_def.name} was loading; the step "
        "finished its loads on its own. Re-execute from asset failure to load whatever it did not report."
    )
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.is_finished:
        context.log.warning(message)
        return
    context.log.error(message + " It marks the run failed, so pools, retries and the next run are not kept waiting.")
    context.instance.report_run_failed(context.dagster_run, message)


def _unreachable(
    context: dg.AssetExecutionContext, database: DatabaseConfig, collections: list[CollectionConfig]
) -> dict[str, str]:
    """Collection name -> why it is not started, for collections whose server does not answer a ping. One ping
    per server before fanning out: a wrong host, port or password then costs one server selection timeout and one
    line, instead of a timeout, retries and a topology dump for every collection."""
    by_url: dict[str, list[str]] = {}
    for collection in collections:
        # the loader reports an unresolvable URL against its collection
        with suppress(ConfigError):
            by_url.setdefault(resolve_connection_url(collection), []).append(collection.name)
    unreachable: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(by_url)), thread_name_prefix="mongodb_ping") as pinger:
        pings = {pinger.submit(check_reachable, url): names for url, names in by_url.items()}
        for ping in as_completed(pings):
            try:
                ping.result()
            except MongoUnreachableError as error:
                names = pings[ping]
                context.log.error(f"{database.name}: {error}; not loading {', '.join(names)}")
                unreachable.update(dict.fromkeys(names, str(error)))
    return unreachable


class _DaemonLoads:
    """Runs loads, at most ``workers`` at a time, in daemon threads. ``ThreadPoolExecutor``'s threads are joined
    when the process ends (a Dagster step's process too), so a load waiting on MongoDB (one reply can take minutes: a
    sort without an index) would keep a terminated step alive until the reply came. A load that is not committing
    (``LoadStop``) has written nothing, so it may end with the process."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[CollectionLoadResult], Callable[[], CollectionLoadResult]] | None]
        self._queue = queue.SimpleQueue()
        self._workers = workers
        for number in range(workers):
            threading.Thread(target=self._work, name=f"{name}_{number}", daemon=True).start()

    def submit(self, load: Callable[[], CollectionLoadResult]) -> Future[CollectionLoadResult]:
        future: Future[CollectionLoadResult] = Future()
        self._queue.put((future, load))
        return future

    def shutdown(self) -> None:
        """Each thread ends once no load is left to take; a load cancelled before it started never starts."""
        for _ in range(self._workers):
            self._queue.put(None)

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            future, load = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(load())
            except BaseException as error:  # as ThreadPoolExecutor does: the caller sees it in the future
                future.set_exception(error)


def _committed(future: Future[CollectionLoadResult]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None and future.result().succeeded


def _stop_loads(stop: LoadStop, futures: dict[Future[CollectionLoadResult], Any]) -> None:
    """Cancels the loads not started yet, stops the others at their next safe point and waits for the one that
    may be committing (``LoadStop.request``): Dagster interrupts again on a second signal, which must not cut that
    wait short, or a load would commit unreported."""
    for future in futures:
        future.cancel()
    while True:
        try:
            stop.request()
            return
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            continue


def partitions_definition(partitions: PartitionsConfig) -> dg.TimeWindowPartitionsDefinition:
    """Dagster's own time-window partitions for ``partitions``, in UTC, the first window starting at its ``start``
    (validated to be a window boundary; weeks and months then start on its weekday and day)."""
    start = partitions.start
    if partitions.every == "hour":
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")
    day = start.strftime("%Y-%m-%d")
    if partitions.every == "day":
        return dg.DailyPartitionsDefinition(start_date=day, timezone="UTC")
    if partitions.every == "week":
        # Dagster counts weekdays from Sunday (0), Python from Monday
        return dg.WeeklyPartitionsDefinition(start_date=day, day_offset=(start.weekday() + 1) % 7, timezone="UTC")
    return dg.MonthlyPartitionsDefinition(start_date=day, day_offset=start.day, timezone="UTC")


def _window(context: dg.AssetExecutionContext, collection: CollectionConfig) -> dict[str, Window]:
    """The loader's ``window`` argument for a partitioned collection: the run's partition (one per run: the backfill
    policy runs each partition on its own); none for another collection, so loaders written before partitions
    still take the call."""
    if collection.partitions is None:
        return {}
    if context.partition_key_range.start != context.partition_key_range.end:
        raise dg.Failure(
            description=f"a run loads one partition of {collection.database}.{collection.name}, this one was given "
            f"{context.partition_key_range.start} to {context.partition_key_range.end}: launch a backfill (one run "
            "per partition) instead",
            allow_retries=False,
        )
    window = context.partition_time_window
    partitions = collection.partitions
    return {"window": Window.of(context.partition_key, partitions.by, window.start, window.end, partitions.start)}


def _database_asset(
    config: ProjectConfig,
    database: DatabaseConfig,
    resource_key: str,
    translator: MongoDltTranslator,
    collections: list[CollectionConfig] | None = None,
) -> dg.AssetsDefinition:
    """The multi-asset of ``collections`` (default: all) of ``database``: its unpartitioned collections under the
    database's op, or the collections sharing one partitions definition under theirs (``partitioned_op_name``)."""
    collections = list(database.collections.values()) if collections is None else collections
    specs = collection_specs(config, database, translator, collections)
    collections_by_key = {spec.key: c for spec, c in zip(specs, collections, strict=True)}
    pool = destination_pool(config.destination.type)
    partitions = collections[0].partitions
    name = database.op_name
    if partitions is not None:
        name = partitioned_op_name(database.op_name, partitions.every, partitions.start)

    @dg.multi_asset(
        name=name,
        partitions_def=partitions_definition(partitions) if partitions is not None else None,
        # one run per partition: each run replaces exactly its window, and the run queue and executors spread them
        backfill_policy=dg.BackfillPolicy.multi_run(1) if partitions is not None else None,
        specs=specs,
        check_specs=[
            spec
            for key, c in collections_by_key.items()
            for spec in collection_check_specs(key, c, f"{database.dataset}.{root_table(c.table_name)}")
        ],
        can_subset=True,
        pool=pool,
        op_tags={DESTINATION_TAG: config.destination.type} if pool else None,
        required_resource_keys={resource_key},
        description=f"Loads the selected collections of MongoDB database `{database.name}` into dataset "
        f"`{database.dataset}`" + (f", one {partitions.every} window per partition." if partitions else "."),
    )
    def _load_database(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        loader: MongoDltLoader = getattr(context.resources, resource_key)
        # The run worker, when the multiprocess executor started this step in a process of its own.
        run_worker = multiprocessing.parent_process()
        selected = [(key, c) for key, c in collections_by_key.items() if key in context.selected_asset_keys]
        selected_checks = context.selected_asset_check_keys
        if (alone := checks_without_their_asset(context.selected_asset_keys, selected_checks)) is not None:
            raise dg.Failure(description=alone, allow_retries=False)

        unreachable = _unreachable(context, database, [c for _, c in selected])
        to_load = [(key, c) for key, c in selected if c.name not in unreachable]

        if to_load:
            context.log.info(
                f"Loading {len(to_load)} collection(s) of {database.name} into {database.dataset}, "
                f"{min(len(to_load), database.max_parallel_collections)} at a time: "
                + ", ".join(c.name for _, c in to_load)
            )
        failed: list[CollectionLoadResult] = []
        stop = LoadStop()
        loads = _DaemonLoads(min(len(to_load), database.max_parallel_collections), f"mongodb_{database.name}")
        futures: dict[Future[CollectionLoadResult], dg.AssetKey] = {}
        for key, collection in to_load:
            future = loads.submit(
                partial(
                    loader.load_collection,
                    collection,
                    database.dataset,
                    context.log,
                    context.run_id,
                    count_rows=dg.AssetCheckKey(key, ROWS_MATCH_SOURCE) in selected_checks,
                    stop=stop,
                    **_window(context, collection),
                )
            )
            # runs once the future holds the result: the step can report it however it is interrupted from now on
            future.add_done_callback(lambda _, name=collection.name: stop.release(name))
            futures[future] = key
        loads.shutdown()

        def materialized(future: Future[CollectionLoadResult]) -> dg.MaterializeResult:
            result, key = future.result(), futures[future]
            context.log.info(
                f"{database.name}.{result.collection}: {result.rows_loaded} rows into "
                f"{result.dataset_name}.{result.table_name} in {result.duration_seconds:.1f}s"
            )
            return dg.MaterializeResult(
                asset_key=key,
                metadata=_metadata(result),
                check_results=check_results(key, collections_by_key[key], result, selected_checks),
            )

        reported: set[Future[CollectionLoadResult]] = set()
        try:
            pending = set(futures)
            while pending:
                with stop.commits_allowed():  # the only place a load may start committing
                    wait(pending, return_when=FIRST_COMPLETED)
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    if not future.result().succeeded:
                        failed.append(future.result())
                        continue
                    yield materialized(future)
                    reported.add(future)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            interrupted = time.monotonic()
            _stop_loads(stop, futures)
            for future in [f for f in futures if _committed(f) and f not in reported]:
                yield materialized(future)
                reported.add(future)
            names = {f: futures[f].to_user_string() for f in futures}
            context.log.warning(
                f"The run was terminated: {database.name}'s loads stopped {time.monotonic() - interrupted:.2f}s "
                f"after the signal. Reported, their loads committed: "
                f"{', '.join(names[f] for f in reported) or 'none'}. Not loaded (stopped before their load started, "
                f"failed, or not started): {', '.join(names[f] for f in futures if f not in reported) or 'none'}."
            )
            raise
        finally:
            _stop_loads(stop, futures)  # the generator closed early (Dagster interrupted it between two results)
        if run_worker is not None and not run_worker.is_alive():
            _report_orphaned_run(context, run_worker.pid)
        if failed or unreachable:
            # collections sharing an unreachable server are named once, with the server's error
            not_started: dict[str, list[str]] = {}
            for name, error in unreachable.items():
                not_started.setdefault(error, []).append(name)
            reasons = [f"{', '.join(names)} not started: {error}" for error, names in not_started.items()]
            reasons += [f"{r.collection}: {r.error}" for r in failed]
            failed_collections = {name: {"error": error, "attempts": 0} for name, error in unreachable.items()}
            failed_collections.update({r.collection: {"error": r.error, "attempts": r.attempts} for r in failed})
            raise dg.Failure(
                description=f"{len(failed_collections)} of {len(selected)} collection(s) of {database.name} "
                "failed: " + "; ".join(reasons),
                metadata={"failed_collections": dg.MetadataValue.json(failed_collections)},
                # an op retry would reload the siblings that succeeded: re-execute from asset failure instead
                allow_retries=False,
            )

    return _load_database


def _refuse_shared_asset_names(config: ProjectConfig, translator: MongoDltTranslator) -> None:
    """Two collections the translator gives one asset key (or, in one database, keys Dagster turns into one output
    name) would fail the definitions with a message naming neither: this one names both, where the YAML has them."""

    def named(database: DatabaseConfig, collection: CollectionConfig) -> str:
        return f"{database.name}.{collection.name} ({collection.path or config.path}, line {collection.line})"

    keys: dict[tuple[str, ...], tuple[DatabaseConfig, CollectionConfig]] = {}
    for database in config.databases.values():
        outputs: dict[str, tuple[tuple[str, ...], CollectionConfig]] = {}
        for collection in database.collections.values():
            key = tuple(translator.asset_key(database, collection))
            output = dg.AssetKey(list(key)).to_python_identifier()
            if key in keys:
                shared, (other_database, other) = f"asset key {'/'.join(key)}", keys[key]
            elif output in outputs:
                other_key, other = outputs[output]
                other_database = database
                shared = f"asset keys {'/'.join(other_key)} and {'/'.join(key)}, one output name {output},"
            else:
                keys[key] = (database, collection)
                outputs[output] = (key, collection)
                continue
            raise dg.DagsterInvalidDefinitionError(
                f"{type(translator).__name__} gives collections {named(other_database, other)} and "
                f"{named(database, collection)} {shared} so their assets would be one; make its asset_key tell "
                "them apart"
            )


def dlt_asset_factory(
    config: ProjectConfig,
    resource_key: str = LOADER_RESOURCE_KEY,
    translator: MongoDltTranslator | None = None,
) -> list[dg.AssetsDefinition]:
    """One ``@multi_asset`` per database in ``config``, each with one ``can_subset`` output per collection, and one
    per database and partitions definition for its partitioned collections (``_by_partitions``). They
    load through the ``MongoDltLoader`` resource under ``resource_key`` (see ``build_definitions``, which binds
    it). ``translator`` names the assets (default: ``MongoDltTranslator()``, ``raw_<database>/<collection>``)."""
    translator = translator or MongoDltTranslator()
    _refuse_shared_asset_names(config, translator)
    with long_lived():
        return [
            _database_asset(config, database, resource_key, translator, collections)
            for database in config.databases.values()
            for collections in _by_partitions(database)
        ]


def _by_partitions(database: DatabaseConfig) -> list[list[CollectionConfig]]:
    """The database's collections by multi-asset: the unpartitioned ones first (the database's op), then those of
    each partitions definition (Dagster takes one per multi-asset). Collections partitioned alike share one: a
    backfill's run of a window then loads all of them, in parallel as the unpartitioned ones do."""
    groups: dict[tuple[str, Any] | None, list[CollectionConfig]] = {}
    for collection in database.collections.values():
        partitions = collection.partitions
        groups.setdefault(None if partitions is None else (partitions.every, partitions.start), []).append(collection)
    return [groups[key] for key in sorted(groups, key=lambda key: (key is not None, str(key)))]
