"""The asset checks every collection carries, evaluated from what its load measured (``CollectionLoadResult``).

- ``rows_match_source`` (ERROR): the warehouse holds what MongoDB holds. A collection read whole (merge or
  replace, no incremental) must hold as many documents (distinct ``_mongo_key`` in its root table) as MongoDB
  counts for its filter, between the counts taken just before and just after the read (at most ``limit``); a
  chunked snapshot that a later run finished spans both runs: the first count is from the snapshot's start. Any
  other collection must have gained one root row per document this load read (the chunks this run committed).
- ``no_type_drift`` (WARN): against the collection's earlier loads, the load added no variant column (a field
  holding a new type) and stored no field as JSON that ``json_paths`` did not ask for. A first load (no earlier
  columns) has nothing to drift from: it passes, and says which fields it found holding several types or stored
  as JSON, the baseline later loads are compared with.
- ``documents_in_windows`` (WARN, partitioned collections only): every document of the collection's filter is in
  a window: none is before the first window, lacks the partition field, holds null there or a value of another
  BSON type than the windows' (MongoDB's ``$gte``/``$lt`` match one type bracket). Those documents are loaded by no
  partition; the server counts them after each partition's read.

The checks are declared on the database's multi-asset and evaluated in the same step, right after the load: the
counts are taken by the source (MongoDB) and the loader (warehouse), and the drift is what the source named. A
collection that failed to load yields no check result: its check evaluations end with the failed step. A run that
selects checks without their asset (a check's "Execute" button) fails before reading anything, saying so
(``checks_without_their_asset``): Dagster offers every check of a subsettable multi-asset on its own, and has no
option to withhold it but making the assets unsubsettable.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Any

import dagster as dg

from mongodb_dlt.config import CollectionConfig
from mongodb_dlt.results import CollectionLoadResult, NewColumn, RowCounts

ROWS_MATCH_SOURCE = "rows_match_source"
NO_TYPE_DRIFT = "no_type_drift"
DOCUMENTS_IN_WINDOWS = "documents_in_windows"


def collection_check_specs(key: dg.AssetKey, collection: CollectionConfig, table: str) -> list[dg.AssetCheckSpec]:
    """The checks of one collection's asset; ``table`` is its root table, ``<dataset>.<table>``."""
    if collection.reads_whole_collection:
        rows = (
            f"After each load, `{table}` holds as many documents (distinct `_mongo_key`) as MongoDB counts for the "
            "collection's filter, between its counts just before and just after the read"
            + (f" (at most `limit`, {collection.limit:,})" if collection.limit else "")
            + ". Fails when the read missed documents, or when the warehouse keeps documents MongoDB no longer has "
            "(merge never deletes)."
        )
    else:
        rows = (
            f"After each load, the rows it added to `{table}` equal the documents it read (less those at the "
            "incremental boundary, which the previous load holds)."
        )
    drift = (
        "Warns when a load adds, against earlier loads, a variant column (a field holding a type it did not hold "
        "before, `<column>__v_<type>`) or stores a field as JSON that `json_paths` does not name (deeper than "
        "`max_table_nesting`, or a data-keyed sub-document), naming the fields and the new columns. The first load "
        "has no earlier loads: it passes and sets the baseline."
    )
    specs = [
        dg.AssetCheckSpec(ROWS_MATCH_SOURCE, asset=key, description=rows),
        dg.AssetCheckSpec(NO_TYPE_DRIFT, asset=key, description=drift),
    ]
    if collection.partitions is not None:
        by = collection.partitions.by
        kind = "an ObjectId" if by == "_id" else "a date"
        windows = (
            f"After each partition's load, MongoDB counts the documents of the collection's filter that no window "
            f"holds: `{by}` before {collection.partitions.start:%Y-%m-%d %H:%M} UTC (the first window), missing, null "
            f"or not {kind}. No partition loads them; warns when there are any."
        )
        specs.append(dg.AssetCheckSpec(DOCUMENTS_IN_WINDOWS, asset=key, description=windows))
    return specs


def check_results(
    key: dg.AssetKey,
    collection: CollectionConfig,
    result: CollectionLoadResult,
    selected: Set[dg.AssetCheckKey],
) -> list[dg.AssetCheckResult]:
    """The results of the selected checks of one successful load."""
    results = []
    if dg.AssetCheckKey(key, ROWS_MATCH_SOURCE) in selected:
        results.append(rows_match_source(key, collection, result))
    if dg.AssetCheckKey(key, NO_TYPE_DRIFT) in selected:
        results.append(no_type_drift(key, result))
    if dg.AssetCheckKey(key, DOCUMENTS_IN_WINDOWS) in selected and collection.partitions is not None:
        results.append(documents_in_windows(key, collection, result))
    return results


def documents_in_windows(
    key: dg.AssetKey, collection: CollectionConfig, result: CollectionLoadResult
) -> dg.AssetCheckResult:
    outside, error = result.read.outside_windows, result.read.outside_windows_error
    by = collection.partitions.by if collection.partitions is not None else "?"
    metadata: dict[str, Any] = {"partition": dg.MetadataValue.text(result.read.partition or "")}
    if outside is None:
        description = f"MongoDB could not count the documents outside every window: {error or 'not counted'}"
    else:
        metadata["documents_outside_windows"] = dg.MetadataValue.int(outside)
        description = (
            f"{_n(outside)} document(s) of the collection's filter are in no window (`{by}` before the first window, "
            "missing, null or of another type): no partition loads them"
            if outside
            else f"Every document of the collection's filter has `{by}` in a window."
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=DOCUMENTS_IN_WINDOWS,
        passed=outside == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def checks_without_their_asset(
    selected_assets: Set[dg.AssetKey], selected_checks: Set[dg.AssetCheckKey]
) -> str | None:
    """Why a run that selected checks without their asset cannot evaluate them, or None when it did not."""
    alone = sorted({check.asset_key.to_user_string() for check in selected_checks} - {
        asset.to_user_string() for asset in selected_assets
    })
    if not alone:
        return None
    return (
        "Asset checks are evaluated by their collection's load, from the counts and columns it measured, and do not "
        f"run on their own: materialize {', '.join(alone)} to run {'its' if len(alone) == 1 else 'their'} checks. "
        "Nothing was read or loaded."
    )


def _n(count: int) -> str:
    return f"{count:,}"


def read_metadata(result: CollectionLoadResult) -> dict[str, Any]:
    """A chunked read's asset metadata: its chunks and bytes, and for a snapshot read in ``_id`` ranges, the
    ranges and what the whole snapshot read (over every run that read part of it)."""
    if not result.chunks:
        return {}
    metadata: dict[str, Any] = {
        "chunks": dg.MetadataValue.int(result.chunks),
        "bytes_read": dg.MetadataValue.int(result.read.bytes),
    }
    snapshot = result.read.snapshot
    if snapshot is not None:
        metadata["snapshot_ranges"] = dg.MetadataValue.json([id_range.describe() for id_range in snapshot.ranges])
        metadata["snapshot_chunks"] = dg.MetadataValue.int(snapshot.chunks)
        metadata["snapshot_documents"] = dg.MetadataValue.int(snapshot.documents)
        metadata["snapshot_started_at"] = dg.MetadataValue.text(snapshot.started_at)
        metadata["snapshot_resumed"] = dg.MetadataValue.bool(snapshot.resumed)
    return metadata


def _read(result: CollectionLoadResult) -> str:
    read = f"this load read {_n(result.documents_read)} documents"
    snapshot = result.read.snapshot
    if snapshot is not None and snapshot.resumed:
        read += (
            f" (it finished a snapshot an earlier run started at {snapshot.started_at}: {_n(snapshot.documents)} "
            f"documents in {snapshot.chunks} chunks; MongoDB's first count is from its start)"
        )
    return read


def rows_match_source(
    key: dg.AssetKey, collection: CollectionConfig, result: CollectionLoadResult
) -> dg.AssetCheckResult:
    table = f"{result.dataset_name}.{result.table_name}"
    counts = result.row_counts or RowCounts(not_verifiable="the load took no counts")
    metadata: dict[str, Any] = {
        "write_disposition": dg.MetadataValue.text(collection.write_disposition),
        "documents_read": dg.MetadataValue.int(result.documents_read),
    }
    if result.skipped_at_boundary:
        metadata["skipped_at_boundary"] = dg.MetadataValue.int(result.skipped_at_boundary)
    for name, value in (
        ("source_count_before", counts.source_before),
        ("source_count_after", counts.source_after),
        ("limit", collection.limit if collection.reads_whole_collection else None),
        ("warehouse_rows", counts.warehouse_rows),
        ("rows_added", counts.rows_added),
    ):
        if value is not None:
            metadata[name] = dg.MetadataValue.int(value)

    if counts.not_verifiable is not None:
        # Dagster has no "skipped" result to yield; a failure would cry wolf on every load of such a destination
        passed = True
        explanation = f"Not verified: {counts.not_verifiable}. {_n(result.documents_read)} documents were read."
    elif counts.error is not None:
        passed, explanation = False, f"Could not compare `{table}` with MongoDB: {counts.error}"
    elif collection.reads_whole_collection:
        passed, explanation = _whole_collection(collection, result, counts, table)
    else:
        passed, explanation = _rows_added(collection, result, counts, table)
    metadata["verified"] = dg.MetadataValue.bool(counts.not_verifiable is None and counts.error is None)
    metadata["explanation"] = dg.MetadataValue.md(explanation)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=ROWS_MATCH_SOURCE,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=explanation.split("\n")[0],
    )


def _whole_collection(
    collection: CollectionConfig, result: CollectionLoadResult, counts: RowCounts, table: str
) -> tuple[bool, str]:
    before, after, rows = counts.source_before, counts.source_after, counts.warehouse_rows
    if before is None or after is None or rows is None:
        return False, f"The load took no counts of MongoDB and `{table}` to compare."
    limit = collection.limit
    low, high = sorted(min(count, limit) if limit else count for count in (before, after))
    if before == after:
        source = f"MongoDB counts {_n(before)} documents matching the filter"
    else:
        source = (
            f"MongoDB counted {_n(before)} documents matching the filter just before the read and {_n(after)} "
            "just after it (documents were written meanwhile)"
        )
    if limit:
        source += f"; `limit` is {_n(limit)}, so {_n(low)}" + (f" to {_n(high)}" if high != low else "") + " expected"
    read = _read(result)
    if low <= rows <= high:
        return True, f"`{table}` holds {_n(rows)} documents; {source}; {read}."
    if rows > high:
        if collection.merges:
            why = (
                "merge never deletes: documents deleted from MongoDB (or no longer matching the filter) after they "
                "were loaded stay in the warehouse. Load the collection once with `write_disposition: replace` to "
                "drop them, or delete their rows (by `_mongo_key` in the root table, `_mongo_root_key` in child "
                "tables)."
            )
        else:
            why = (
                "replace keeps exactly what this read returned, so the read saw documents neither count saw "
                "(inserted and deleted while it ran)."
            )
        return False, (
            f"`{table}` holds {_n(rows)} documents, {_n(rows - high)} more than expected; {source}; {read}.\n\n{why}"
        )
    missing = low - rows
    why = (
        "The read did not return documents that MongoDB counted before and after it: they were hidden from the "
        "cursor while it ran (moved, or updated out of and back into the filter), or the server's count and its "
        "find disagree."
    )
    if tuple(collection.primary_key) != ("_id",):
        why += (
            f" Or several documents share a primary key (`{', '.join(collection.primary_key)}`): the warehouse "
            "keeps one row per key."
        )
    return False, f"`{table}` holds {_n(rows)} documents, {_n(missing)} fewer than expected; {source}; {read}.\n\n{why}"


def _rows_added(
    collection: CollectionConfig, result: CollectionLoadResult, counts: RowCounts, table: str
) -> tuple[bool, str]:
    added = counts.rows_added or 0
    read = f"this load read {_n(result.documents_read)} documents"
    if result.skipped_at_boundary:
        read += (
            f" (and skipped {_n(result.skipped_at_boundary)} more at the cursor's last value: the previous load "
            "holds them)"
        )
    if added == result.documents_read:
        return True, f"This load added {_n(added)} rows to `{table}`, one per document: {read}."
    if added < result.documents_read:
        why = "Documents read were not loaded."
        if collection.merges:
            why = (
                "merge keeps one row per primary key: documents read twice (updated while the read ran) or sharing "
                "a primary key land once."
            )
        return False, (
            f"This load added {_n(added)} rows to `{table}`, {_n(result.documents_read - added)} fewer than "
            f"documents: {read}.\n\n{why}"
        )
    return False, (
        f"This load added {_n(added)} rows to `{table}`, {_n(added - result.documents_read)} more than documents: "
        f"{read}.\n\nThe warehouse holds rows under this load's id that the read did not produce."
    )


def no_type_drift(key: dg.AssetKey, result: CollectionLoadResult) -> dg.AssetCheckResult:
    variants = [column for column in result.new_columns if column.variant]
    json_fallbacks = [column for column in result.new_columns if column.json_fallback]
    lines = [_describe_variant(column) for column in variants] + [_describe_json(column) for column in json_fallbacks]
    first_load = _first_load(result)
    if lines and first_load:
        summary = (
            "First load, the baseline later loads are compared with: "
            + "; ".join(
                [f"`{c.path}` holds {c.type} values besides {c.plain_type} ones (column `{c.table}.{c.column}`)"
                 for c in variants]
                + [f"`{c.path}` is stored as JSON (column `{c.table}.{c.column}`)" for c in json_fallbacks]
            )
        )
        explanation = summary + "\n\n" + "\n".join(f"- {line}" for line in lines)
    elif lines:
        summary = "Type drift: " + "; ".join(
            [f"`{c.path}` got {c.type} values (new column `{c.table}.{c.column}`)" for c in variants]
            + [f"`{c.path}` landed as JSON (new column `{c.table}.{c.column}`)" for c in json_fallbacks]
        )
        explanation = summary + "\n\n" + "\n".join(f"- {line}" for line in lines)
    else:
        summary = explanation = (
            "This load added no variant and no JSON column: every field kept its type and its columns."
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=NO_TYPE_DRIFT,
        passed=first_load or not lines,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "first_load": dg.MetadataValue.bool(first_load),
            "fields": dg.MetadataValue.json(sorted({column.path for column in (*variants, *json_fallbacks)})),
            "variant_columns": dg.MetadataValue.json(_by_column(variants)),
            "json_columns": dg.MetadataValue.json(_by_column(json_fallbacks)),
            "explanation": dg.MetadataValue.md(explanation),
        },
        description=summary,
    )


def _first_load(result: CollectionLoadResult) -> bool:
    """The load started from no columns of the collection: every column it has is one it named itself. (What it
    named is what it added to the columns it started from, so the two are equal only when it started from none.)"""
    named = {(column.table, column.column) for column in result.new_columns}
    return named == {(table, column) for table, columns in result.column_paths.items() for column in columns}


def _by_column(columns: Iterable[NewColumn]) -> dict[str, str]:
    return {f"{column.table}.{column.column}": f"{column.path} ({column.type})" for column in columns}


def _describe_variant(column: NewColumn) -> str:
    return (
        f"`{column.path}` holds {column.type} values besides {column.plain_type} ones: they land in the new column "
        f"`{column.table}.{column.column}`, while `{column.plain_column}` keeps the {column.plain_type} values "
        "(a query reading that column alone misses them)"
    )


def _describe_json(column: NewColumn) -> str:
    text = f"`{column.path}` is stored whole as JSON in the new column `{column.table}.{column.column}`"
    if column.flattened_before:
        text += ", no longer flattened into " + ", ".join(f"`{name}`" for name in column.flattened_before)
    return text + " (deeper than `max_table_nesting`, a data-keyed sub-document, or a path stored as JSON before)"
