"""Converted batches -> named Arrow tables with their dlt hints: the rows dlt extracts.

The root table gets ``_mongo_key`` (the typed identity of the primary key: merge upserts on it, so ``1`` and
``"1"`` are two documents and a null ``_id`` is a document too). Each child table (one per array path,
``<table>__<field>``) is linked by ``_dlt_parent_id`` / ``_dlt_root_id`` to the parent's and root's ``_dlt_id``,
with ``_dlt_list_idx`` and ``_mongo_root_key``. Under merge a document's child rows are replaced as a whole (merge
key ``_mongo_root_key``): a document whose array shrank, emptied or vanished sends one marker row
(``_mongo_deleted``) that clears its old rows. Every row carries its package's ``_dlt_load_id``, so a load that
never completed can be undone (load/warehouse.py).

A partition of a partitioned collection replaces its window instead: every row (root and child) carries the
partition's key in ``_mongo_partition``, the merge key of every table (no primary key), and each table the
collection has gets one marker row with that key (``_mongo_deleted``): dlt's delete-insert then deletes all the
window's old rows in every table, even one the window no longer has rows for, and inserts the new ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.typing import TDataItems
from dlt.extract.hints import make_hints

from mongodb_dlt.config import CollectionOptions
from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract.bson_arrow import ConvertedBatch, ConvertedTable, FieldPath, TablePath, random_row_ids
from mongodb_dlt.extract.columns import (
    DELETED,
    DOCUMENT_KEY,
    LIST_INDEX,
    LOAD_ID,
    PARENT_ID,
    PARTITION,
    ROOT_ID,
    ROOT_KEY,
    ROW_ID,
    TABLE_HINT,
    CollectionNames,
    TableNames,
)
from mongodb_dlt.results import JSON_TAG, ExtractStats

ITEM_BYTES = 16 * 1024 * 1024
"""Arrow bytes gathered before they go to dlt as one item per table (see ``Assembler.items``)."""

# nullable: tables written before the column existed get it added with NULL in their (complete) rows
_LOAD_ID_COLUMN = {"name": LOAD_ID, "data_type": "text", "nullable": True}
_ROW_ID_COLUMN = {"name": ROW_ID, "data_type": "text", "nullable": False, "row_key": True, "unique": True}
_JSON_NUL = r"(^|[^\\])(\\\\)*\\u0000"
"""U+0000 escaped in JSON text (``\\u0000`` after an even number of backslashes: not an escaped backslash)."""
_CHILD_LINK_COLUMNS = {
    ROW_ID: {"name": ROW_ID, "data_type": "text", "nullable": True, "row_key": True},
    PARENT_ID: {"name": PARENT_ID, "data_type": "text", "nullable": True},
    ROOT_ID: {"name": ROOT_ID, "data_type": "text", "nullable": True},
    LIST_INDEX: {"name": LIST_INDEX, "data_type": "bigint", "nullable": True},
}


class Assembler:
    """Turns converted batches into named Arrow tables with their dlt hints, in batch order."""

    def __init__(
        self,
        names: CollectionNames,
        options: CollectionOptions,
        stats: ExtractStats,
        load_id: str | None,
        cursor_path: FieldPath | None = None,
        first_load: bool = False,
        nul_free_text: bool = False,
        partition: str | None = None,
    ) -> None:
        self.names = names
        self.partition = partition
        self.nul_free_text = nul_free_text
        self.load_id = load_id
        self.cursor_path = cursor_path
        self.write_disposition = options.write_disposition
        self.schema_contract = options.schema_contract
        self.stats = stats
        self.merge = options.merges and partition is None  # a partition replaces its window, not documents by key
        # the warehouse holds no old array elements to clear (a first load), or the window's markers clear them all
        self.clear_missing = self.merge and not first_load
        self.pending: dict[TablePath, list[pa.Table]] = {}
        self.pending_bytes = 0

    def items(self, batch: ConvertedBatch) -> Iterator[TDataItems]:
        """Takes in one converted batch; hands dlt the tables gathered so far once they are big enough.

        dlt computes and validates a table schema for every item it is given, whatever its size, so tables go
        to it in pieces of about ``ITEM_BYTES`` rather than one per server reply."""
        for path, arrow_table in self._tables(batch):
            self.pending.setdefault(path, []).append(arrow_table)
            self.pending_bytes += arrow_table.nbytes
        if self.pending_bytes >= ITEM_BYTES:
            yield from self.flush()

    def flush(self) -> Iterator[TDataItems]:
        """The gathered tables, one item per table (a child table's marker rows join its other rows)."""
        pending, self.pending, self.pending_bytes = self.pending, {}, 0
        for path, tables in pending.items():
            arrow_table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
            yield self._with_hints(self.names.table(path), arrow_table, root=path == ())

    def _tables(self, batch: ConvertedBatch) -> Iterator[tuple[TablePath, pa.Table]]:
        root = batch.tables.get(())
        if root is None or root.rows == 0:
            return
        row_ids: dict[TablePath, pa.Array] = {(): random_row_ids(root.rows)}
        root_names = self.names.table(())
        arrays = {
            DOCUMENT_KEY: batch.keys,
            ROW_ID: row_ids[()],
            LOAD_ID: self._load_ids(root.rows),
            **self._partition_column(root.rows),
            **self._named(root_names, root, batch.keys),
        }
        yield (), pa.table(arrays)
        self.stats.add_rows(root_names.name, root.rows)

        child_keys: dict[TablePath, pa.Array] = {}
        for path, table in batch.tables.items():
            if path == ():
                continue
            parent_ids = row_ids[path[:-1]]
            ids = row_ids[path] = random_row_ids(table.rows)
            names = self.names.table(path)
            root_keys = pc.take(batch.keys, table.root_rows)
            arrays = {
                ROOT_KEY: root_keys,
                ROW_ID: ids,
                PARENT_ID: pc.take(parent_ids, table.parent_rows),
                ROOT_ID: pc.take(row_ids[()], table.root_rows),
                LIST_INDEX: table.list_index,
                LOAD_ID: self._load_ids(table.rows),
                **self._partition_column(table.rows),
                **self._named(names, table, root_keys),
            }
            if self.merge:
                arrays[DELETED] = pa.nulls(table.rows, pa.bool_())
            child_keys[path] = arrays[ROOT_KEY]
            self.stats.add_rows(names.name, table.rows)
            yield path, pa.table(arrays)
        if self.clear_missing:
            yield from self._clear_markers(batch.keys, child_keys)

    def _clear_markers(
        self, keys: pa.Array, child_keys: dict[TablePath, pa.Array]
    ) -> Iterator[tuple[TablePath, pa.Table]]:
        """Marker rows clearing, in every known child table, the old rows of documents that have none now."""
        for path in list(self.names.tables):
            if path == ():
                continue
            present = child_keys.get(path)
            missing = keys if present is None else pc.filter(keys, pc.invert(pc.is_in(keys, value_set=present)))
            if len(missing) == 0:
                continue
            markers = pa.table({
                ROOT_KEY: missing,
                LOAD_ID: self._load_ids(len(missing)),
                DELETED: pa.array([True] * len(missing), pa.bool_()),
            })
            yield path, markers

    def clear_window(self) -> None:
        """A partition's read, at its end: one marker row per table the collection has (known to the schema or met
        now) that makes dlt delete the window's old rows there, whatever this read found."""
        if self.partition is None:
            return
        for path in [(), *(path for path in self.names.tables if path != ())]:
            key = DOCUMENT_KEY if path == () else ROOT_KEY
            marker = {
                key: pa.array([""], pa.string()),  # not null in the staging table; the row is never inserted
                ROW_ID: random_row_ids(1),
                LOAD_ID: self._load_ids(1),
                DELETED: pa.array([True], pa.bool_()),
                **self._partition_column(1),
            }
            self.pending.setdefault(path, []).append(pa.table(marker))

    def _partition_column(self, rows: int) -> dict[str, pa.Array]:
        if self.partition is None:
            return {}
        return {PARTITION: pa.repeat(pa.scalar(self.partition, pa.string()), rows)}

    def _load_ids(self, rows: int) -> pa.Array:
        # every row names its package, so a load that never completed can be undone (load/warehouse.py)
        return pa.repeat(pa.scalar(self.load_id, pa.string()), rows)

    def _named(self, names: TableNames, table: ConvertedTable, keys: pa.Array) -> dict[str, pa.Array]:
        """The table's data columns by name; ``keys`` are the ``_mongo_key`` of each row's document."""
        if self.nul_free_text:
            for (field_path, tag), array in table.columns.items():
                _refuse_nul(array, tag, field_path, keys)
        return {names.column(field_path, tag): array for (field_path, tag), array in table.columns.items()}

    def _with_hints(self, names: TableNames, arrow_table: pa.Table, root: bool) -> TDataItems:
        columns = names.take_new_columns()
        columns[LOAD_ID] = _LOAD_ID_COLUMN
        if root:
            columns[ROW_ID] = _ROW_ID_COLUMN
            columns[DOCUMENT_KEY] = {"name": DOCUMENT_KEY, "data_type": "text", "nullable": False}
            keys: dict[str, Any] = {"primary_key": DOCUMENT_KEY} if self.merge else {}
            cursor_column = names.base.get(self.cursor_path) if self.merge and self.cursor_path else None
            if cursor_column is not None:
                # A document whose cursor moved while the read ran is met twice (its index entry moved ahead of
                # the scan); dlt's merge keeps one row per key: the newest, by the cursor. load/warehouse.py drops the
                # older version's child rows.
                columns.setdefault(cursor_column, {"name": cursor_column})["dedup_sort"] = "desc"
        else:
            columns.update(_CHILD_LINK_COLUMNS)
            columns[ROOT_KEY] = {"name": ROOT_KEY, "data_type": "text", "nullable": False}
            keys = {}
            if self.merge:
                columns[DELETED] = {"name": DELETED, "data_type": "bool", "nullable": True, "hard_delete": True}
                keys = {"merge_key": ROOT_KEY}
        if self.partition is not None:
            columns[PARTITION] = {"name": PARTITION, "data_type": "text", "nullable": False}
            columns[DELETED] = {"name": DELETED, "data_type": "bool", "nullable": True, "hard_delete": True}
            keys = {"merge_key": PARTITION}
        hints = make_hints(
            table_name=names.name,
            write_disposition=self.write_disposition,  # type: ignore[arg-type]
            columns=columns,  # type: ignore[arg-type]
            schema_contract=self.schema_contract,
            additional_table_hints={TABLE_HINT: json.dumps([list(part) for part in names.path])},
            **keys,
        )
        return dlt.mark.with_hints(arrow_table, hints, create_table_variant=True)


def _refuse_nul(array: pa.Array, tag: str, field_path: FieldPath, keys: pa.Array) -> None:
    """Raises, naming the first document and field, when a text of ``array`` holds U+0000: PostgreSQL's text and
    jsonb cannot store it, and the load would fail late, with a message naming neither."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return
    found = pc.match_substring_regex(array, _JSON_NUL) if tag == JSON_TAG else pc.match_substring(array, "\x00")
    if not pc.any(found).as_py():
        return
    row = pc.index(found, True).as_py()
    field = ".".join(field_path) or "(array element)"
    raise DocumentConversionError(
        f"document _mongo_key={keys[row].as_py()!r}, field {field!r}: the text holds the NUL character (U+0000), "
        "which MongoDB allows and PostgreSQL's text and JSON columns cannot store; remove it in MongoDB, leave "
        "the field out with `projection`, or load this collection into another destination"
    )
