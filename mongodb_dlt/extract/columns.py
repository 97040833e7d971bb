"""Collision-free table and column names for MongoDB paths and types, kept stable across batches and runs.

A field path (``("customer", "address", "zip")``) with a type tag (``string``) becomes a column name. The
plain name is dlt's snake_case of each key joined by ``__`` (``customer__address__zip``), accents dropped
(``café`` -> ``cafe``). The first type seen for a path owns that name; every further type of the same path gets
a variant ``<name>__v_<tag>`` (``zip`` BIGINT and ``zip__v_string`` VARCHAR), so no value is ever coerced into
another type. A name already taken by another path (``Name`` after ``name``, ``a.b`` after ``a_b``, any two
CJK keys) or one of our own columns gets a stable suffix: ``_`` and 8 hex digits of a hash of the raw path.

Every name is a fixed point of dlt's snake_case naming, so dlt never renames (and never merges) what we hand
it. The map is kept in the dlt schema as column hints (``x-mongodb-path``, ``x-mongodb-type``,
``x-mongodb-variant``; tables carry ``x-mongodb-table``), so the next run, or a new worker that restored the
schema from the warehouse, names every path exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCase

from mongodb_dlt.extract.bson_types import LIST_LEVEL, FieldPath, TablePath
from mongodb_dlt.results import JSON_TAG, NewColumn

ROW_ID = "_dlt_id"
PARENT_ID = "_dlt_parent_id"
ROOT_ID = "_dlt_root_id"
LIST_INDEX = "_dlt_list_idx"
LOAD_ID = "_dlt_load_id"
DOCUMENT_KEY = "_mongo_key"
"""Root tables: the typed identity of the document's primary key (``n:1``, ``s:1``, ``o:<hex>``, ``null``)."""
ROOT_KEY = "_mongo_root_key"
"""Child tables: ``_mongo_key`` of the document the row belongs to; merge replaces a document's rows by it."""
DELETED = "_mongo_deleted"
"""Child tables of merge collections (and every table of a partitioned one): true on the marker rows that clear a
document's (or a window's) old rows (never stored)."""

PARTITION = "_mongo_partition"
"""Every row of a partitioned collection: the Dagster partition (its window) that loaded it; a partition's load
replaces the rows holding its key (the merge key), in every table."""

RESERVED_COLUMNS = frozenset(
    {ROW_ID, PARENT_ID, ROOT_ID, LIST_INDEX, LOAD_ID, DOCUMENT_KEY, ROOT_KEY, DELETED, PARTITION}
)

PATH_HINT = "x-mongodb-path"
TYPE_HINT = "x-mongodb-type"
VARIANT_HINT = "x-mongodb-variant"
TABLE_HINT = "x-mongodb-table"

MAX_NAME_LENGTH = 120
"""Longer table and column names are cut and given a suffix made from the full path."""

SCALAR_ELEMENT_NAME = "value"
"""Column of a child table holding the array's scalar elements, as dlt names it."""
NESTED_LIST_NAME = "list"
"""Table name segment of an array directly inside an array, as dlt names it."""

_snake_case = SnakeCase()


def normalize_key(key: str) -> str:
    """One MongoDB key as one identifier: accents dropped, then dlt's snake_case (which never changes it again)."""
    ascii_key = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode("ascii").strip()
    return _snake_case.normalize_identifier(ascii_key or "x")


def _segment(key: str) -> str:
    return NESTED_LIST_NAME if key == LIST_LEVEL else normalize_key(key)


def _is_field(field_path: FieldPath) -> bool:
    """A sub-document's field, not an array element: only those stay JSON once they were (data-keyed maps).
    An element stored whole (data-keyed, or an array too deep) is decided element by element."""
    return bool(field_path) and field_path[-1] != LIST_LEVEL


def flat_path(table_path: TablePath, field_path: FieldPath) -> FieldPath:
    """The keys of a path across arrays, without array levels: how ``json_paths`` are matched."""
    return tuple(key for part in (*table_path, field_path) for key in part if key != LIST_LEVEL)


def display_path(table_path: TablePath, field_path: FieldPath) -> str:
    """``items[].price``, ``matrix[][]``, ``customer.address.zip``: where a column's values sit in a document."""
    text = ""
    for part in table_path:
        text += "".join("[]" if key == LIST_LEVEL else f".{key}" for key in part) + "[]"
    text += "".join("[]" if key == LIST_LEVEL else f".{key}" for key in field_path)
    return text.lstrip(".") or "[]"


def _suffix(raw: Any, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(raw, ensure_ascii=False).encode()).hexdigest()[:length]


def _unique(candidate: str, taken: set[str], raw: Any) -> str:
    if len(candidate) > MAX_NAME_LENGTH:
        # dlt names files after tables: a name past the file system's 255 bytes would fail the whole load
        candidate = f"{candidate[: MAX_NAME_LENGTH - 9]}_{_suffix(raw)}"
    if candidate not in taken:
        return candidate
    for length in (8, 16, 64):
        name = f"{candidate}_{_suffix(raw, length)}"
        if name not in taken:
            return name
    raise ValueError(f"cannot find a free column name for {raw!r}")


@dataclass
class TableNames:
    """The names of one table: its own, and one per ``(field path, tag)`` seen so far."""

    name: str
    path: TablePath
    columns: dict[tuple[FieldPath, str], str] = field(default_factory=dict)
    base: dict[FieldPath, str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=lambda: set(RESERVED_COLUMNS))
    new_columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Column schemas added since the last ``take_new_columns``: hints dlt must learn."""
    json_paths: set[FieldPath] = field(default_factory=set)
    """Shared with the collection: every path named as a JSON column is added."""

    def column(self, field_path: FieldPath, tag: str) -> str:
        """The column of ``field_path`` holding values of ``tag``, named now if it is new."""
        known = self.columns.get((field_path, tag))
        if known is not None:
            return known
        base = self.base.get(field_path)
        if base is None:
            plain = "__".join(_segment(key) for key in field_path) if field_path else SCALAR_ELEMENT_NAME
            name = _unique(plain, self.taken, list(field_path))
            self.base[field_path] = name
            variant = False
        else:
            name = _unique(f"{base}__v_{tag}", self.taken, [*field_path, tag])
            variant = True
        self.taken.add(name)
        self.columns[(field_path, tag)] = name
        hints: dict[str, Any] = {"name": name, PATH_HINT: json.dumps(list(field_path)), TYPE_HINT: tag}
        if variant:
            hints[VARIANT_HINT] = True
        if tag == JSON_TAG:
            hints["data_type"] = "json"
            if _is_field(field_path):
                self.json_paths.add(flat_path(self.path, field_path))
        self.new_columns[name] = hints
        return name

    def take_new_columns(self) -> dict[str, dict[str, Any]]:
        columns, self.new_columns = self.new_columns, {}
        return columns

    def paths(self) -> dict[str, str]:
        """Column name -> MongoDB path (dotted, ``[]`` for array elements) and BSON type tag, for metadata."""
        return {
            name: f"{display_path(self.path, path)} ({tag})" for (path, tag), name in self.columns.items()
        }


class CollectionNames:
    """Names for one collection's tables: the root table and one child table per array path."""

    def __init__(self, root_table: str, known_tables: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.root_table = root_table
        self.tables: dict[TablePath, TableNames] = {}
        self._table_names: set[str] = set()
        self.json_paths: set[FieldPath] = set()
        """Paths stored whole as JSON so far (flattened keys, as ``ConversionSettings.json_paths``): once a path
        lands as JSON, later documents store it as JSON too instead of flattening it."""
        self._restore(known_tables or {})
        if () not in self.tables:
            self._add_table((), root_table)

    def _restore(self, known_tables: Mapping[str, Mapping[str, Any]]) -> None:
        for table_name, table in known_tables.items():
            raw_path = table.get(TABLE_HINT)
            if raw_path is None or not table_name.startswith(self.root_table):
                continue
            path = tuple(tuple(part) for part in json.loads(raw_path))
            names = self._add_table(path, table_name)
            for column_name, column in table.get("columns", {}).items():
                if PATH_HINT not in column:
                    continue
                field_path = tuple(json.loads(column[PATH_HINT]))
                names.columns[(field_path, column[TYPE_HINT])] = column_name
                names.taken.add(column_name)
                if column[TYPE_HINT] == JSON_TAG and _is_field(field_path):
                    self.json_paths.add(flat_path(path, field_path))
                if not column.get(VARIANT_HINT):
                    names.base[field_path] = column_name

    def _add_table(self, path: TablePath, name: str) -> TableNames:
        names = self.tables[path] = TableNames(name=name, path=path, json_paths=self.json_paths)
        self._table_names.add(name)
        return names

    def table(self, path: TablePath) -> TableNames:
        """The names of the table holding the array at ``path`` (``()``: the root table), named if new."""
        names = self.tables.get(path)
        if names is None:
            plain = "__".join([self.root_table, *(_segment(key) for part in path for key in part)])
            names = self._add_table(path, _unique(plain, self._table_names, [list(part) for part in path]))
        return names

    def all_paths(self) -> dict[str, dict[str, str]]:
        return {names.name: names.paths() for names in self.tables.values() if names.columns}

    def known_columns(self) -> set[tuple[TablePath, FieldPath, str]]:
        """Every ``(table path, field path, tag)`` named so far, to tell new columns from known ones later."""
        return {(path, field_path, tag) for path, table in self.tables.items() for field_path, tag in table.columns}

    def new_columns_since(
        self, known: set[tuple[TablePath, FieldPath, str]], json_paths: frozenset[FieldPath]
    ) -> list[NewColumn]:
        """The columns named since ``known`` was taken, each with the column of its path's first type."""
        added = []
        for path, table in self.tables.items():
            tag_of = {name: tag for (_, tag), name in table.columns.items()}
            for (field_path, tag), name in table.columns.items():
                if (path, field_path, tag) in known:
                    continue
                plain = table.base.get(field_path, name)
                flattened_before: tuple[str, ...] = ()
                if tag == JSON_TAG:
                    flattened_before = tuple(
                        column
                        for (other_path, _), column in table.columns.items()
                        if len(other_path) > len(field_path) and other_path[: len(field_path)] == field_path
                    )
                added.append(NewColumn(
                    table=table.name,
                    column=name,
                    path=display_path(path, field_path),
                    type=tag,
                    plain_column=plain,
                    plain_type=tag_of.get(plain, tag),
                    configured_json=tag == JSON_TAG and flat_path(path, field_path) in json_paths,
                    flattened_before=flattened_before,
                ))
        return added
