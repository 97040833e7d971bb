"""What a read and a load report: plain records, filled in by the source and the loader, read by the checks and
the factory. Nothing here does any work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JSON_TAG = "json"
"""The type tag of a value stored whole as JSON text (dlt's ``json`` type)."""


@dataclass(frozen=True)
class NewColumn:
    """A column an extraction named for the first time: the schema it started from did not have it."""

    table: str
    column: str
    path: str
    """Where its values sit in a document (``display_path``): ``customer.address.zip``, ``items[].sku``."""
    type: str
    """The type tag of its values (``string``, ``int64``, ``json``, ...)."""
    plain_column: str
    """The column of the path's first type: the column itself, unless this is a variant."""
    plain_type: str
    configured_json: bool = False
    """A JSON column because ``json_paths`` asks for one, not as a fallback."""
    flattened_before: tuple[str, ...] = ()
    """A JSON column: the columns its sub-document was flattened into before (earlier loads or batches)."""

    @property
    def variant(self) -> bool:
        """Holds another type than the path's first: the path's type drifted."""
        return self.column != self.plain_column

    @property
    def json_fallback(self) -> bool:
        """A field stored whole as JSON that ``json_paths`` did not ask for: deeper than ``max_table_nesting``, a
        data-keyed map, or a path that became JSON earlier."""
        return self.type == JSON_TAG and not self.configured_json and not self.variant


@dataclass
class ExtractStats:
    """What one extraction read and wrote, filled in as it goes: rows exclude merge's marker rows."""

    documents: int = 0
    """Documents converted: those skipped at the incremental boundary are not counted."""
    skipped_at_boundary: int = 0
    batches: int = 0
    batches_in_workers: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """Table -> column -> MongoDB path and type, for every column the collection has."""
    new_columns: list[NewColumn] = field(default_factory=list)
    """Columns this extraction added: new fields, variants of drifted types, paths stored as JSON."""
    count_before: int | None = None
    """Documents matching the read's query just before the read (``count_documents=True`` only)."""
    count_after: int | None = None
    """The same count just after the read."""
    count_error: str | None = None
    """Why the server refused to count (a filter ``count_documents`` does not take, such as ``$where``)."""
    partition: str | None = None
    """A partitioned collection: the partition (window) read."""
    outside_windows: int | None = None
    """A partitioned collection: documents its filter matches that no window holds (before the first window, without
    the field, null, or of another BSON type), counted by the server just after the read."""
    outside_windows_error: str | None = None
    """Why the server could not count them."""
    on_progress: Callable[[int], None] | None = None
    bytes: int = 0
    """BSON bytes read (documents as the server sent them)."""
    read_complete: bool = True
    """False when a chunk of a chunked read stopped at ``chunk_size`` with more to read."""
    estimated_documents: int | None = None
    """MongoDB's estimate of the collection's documents (its metadata), for a chunked read's progress."""
    snapshot: Any = None
    """A chunked snapshot's progress (``extract.ranges.Snapshot``) after the last chunk read."""

    def add_rows(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows


@dataclass(frozen=True)
class RowCounts:
    """The counts ``rows_match_source`` compares, taken around one load (None: not taken)."""

    source_before: int | None = None
    """Documents matching the read's query just before the read (collections read whole only)."""
    source_after: int | None = None
    """The same count just after the read."""
    warehouse_rows: int | None = None
    """Distinct ``_mongo_key`` in the root table after the load (collections read whole only)."""
    rows_added: int | None = None
    """Root rows carrying this load's ``_dlt_load_id``."""
    not_verifiable: str | None = None
    """Why the warehouse could not be counted at all (a destination without SQL)."""
    error: str | None = None
    """Why MongoDB or the warehouse could not be counted."""


@dataclass(frozen=True)
class CollectionLoadResult:
    """What one collection's load did, success or failure: the factory turns it into Dagster events."""

    database: str
    collection: str
    dataset_name: str
    table_name: str
    """The root table, as the warehouse names it."""
    read: ExtractStats = field(default_factory=ExtractStats)
    """What the read did: documents, rows per table, every column's MongoDB path and type, new columns."""
    columns: list[tuple[str, str, bool]] = field(default_factory=list)
    """The root table's columns as the warehouse holds them: name, data type, nullable."""
    row_counts: RowCounts | None = None
    """Only when the load was asked to count (``count_rows``)."""
    schema_changes: list[str] = field(default_factory=list)
    cursor_field: str | None = None
    cursor_before: Any = None
    """The cursor the load started from, as kept in the state; None when there was no state yet."""
    cursor_initial_value: Any = None
    """The configured ``initial_value`` (ISO-8601 for dates), where a load without state starts."""
    cursor_after: Any = None
    duration_seconds: float = 0.0
    attempts: int = 1
    load_ids: list[str] = field(default_factory=list)
    chunks: int = 0
    """Chunks this load committed, one package each (``chunk_size``); 0: the read was one package."""
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def rows_loaded(self) -> int:
        """Root rows the read wrote."""
        return self.read.rows.get(self.table_name, 0)

    @property
    def child_tables(self) -> dict[str, int]:
        """Child table -> rows the read wrote (merge's marker rows not counted)."""
        return {table: rows for table, rows in self.read.rows.items() if table != self.table_name}

    @property
    def documents_read(self) -> int:
        """Documents converted and loaded; ``skipped_at_boundary`` more were read and skipped on purpose."""
        return self.read.documents

    @property
    def skipped_at_boundary(self) -> int:
        """Documents at the last cursor value that the previous incremental load already loaded."""
        return self.read.skipped_at_boundary

    @property
    def column_paths(self) -> dict[str, dict[str, str]]:
        """Table -> column -> the MongoDB path and BSON type it holds."""
        return self.read.columns

    @property
    def new_columns(self) -> list[NewColumn]:
        return self.read.new_columns
