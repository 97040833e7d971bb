"""Round trip, as properties: random MongoDB documents -> ``mongodb_collection`` -> dlt -> DuckDB -> documents
rebuilt from the warehouse alone (the newest dlt schema stored in ``_dlt_version`` with our column and table
hints, the tables, and the child tables' links) must equal the source documents in the documented representation.

The documented representation (``bson_arrow``'s type table, the README), as ``Representation`` builds it:
string -> str; Int32/Int64 -> int; double -> float (NaN, +-Infinity, -0.0 kept); bool; date -> UTC datetime
(years outside 1..9999: canonical Extended JSON text); ObjectId -> 24 hex; Decimal128 that DECIMAL(38,9) holds
exactly -> Decimal, other Decimal128 -> its exact text; Binary 0 -> bytes, UUID -> canonical text, other
subtypes -> bytes; Regex, Code, Timestamp, MinKey, MaxKey, DBRef -> canonical Extended JSON; null, missing,
empty sub-documents and empty arrays hold no leaf -> absent (an array element keeps its place, as None);
containers deeper than ``max_table_nesting`` and data-keyed sub-documents -> relaxed Extended JSON (compared
parsed), and once a path has landed as JSON, later batches and runs store it as JSON too. Each document is
found by ``_mongo_key``, the typed identity of its ``_id`` (``n:1``, ``s:1``, ``o:<hex>``).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import dlt
import duckdb
import mongomock
import pytest
from bson import DBRef, MaxKey, MinKey, ObjectId, Regex, json_util
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st

from mongodb_dlt.extract import workers
from mongodb_dlt.extract.bson_types import looks_like_data_key
from mongodb_dlt.extract.source import mongodb_collection
from mongodb_dlt.results import ExtractStats
from mongodb_dlt_tests.strategies import bodies, collections, deep_bodies, id_kinds, make_id, scalars, with_ids

DATASET = "mongo"
COLLECTION = "docs"
MAX_NESTING = 2
DEFAULT_BATCH_SIZE = 1000

# the contract between the loader and whoever reads the warehouse: hint names and the nested-list path segment
PATH_HINT = "x-mongodb-path"
TYPE_HINT = "x-mongodb-type"
TABLE_HINT = "x-mongodb-table"
LIST_LEVEL = "\u0000list"

Document = dict[str, Any]
FlatPath = tuple[str, ...]
"""The keys from the root down to a value, array levels left out: how the loader remembers the paths stored as
JSON. Only fields are remembered: an array element stored whole (data-keyed, or an array too deep) is decided
element by element (``test_one_element_stored_as_json_leaves_its_array_a_child_table``)."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_DATE_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_DATE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@pytest.fixture(autouse=True, scope="module")
def _nothing_to_restore() -> Iterator[None]:
    """Each warehouse here is new, or was loaded by the same working folder: skip dlt's look for a state to restore
    from it before each run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINES__ROUNDTRIP__RESTORE_FROM_DESTINATION", "false")
        yield


# --- the documented representation -------------------------------------------------------------------------


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""No leaf: the field is not in the rebuilt document."""


@dataclass(frozen=True)
class Json:
    """A value stored whole as JSON text, parsed."""

    value: Any


_DECIMAL_CONTEXT = Context(prec=200, Emax=100_000, Emin=-100_000)


def expected_decimal(value: Decimal128) -> Decimal | str:
    number = value.to_decimal()
    if number.is_finite() and not (number.is_zero() and number.is_signed()):  # a DECIMAL column has no -0
        with localcontext(_DECIMAL_CONTEXT):
            scaled = number.scaleb(9)
            if scaled == scaled.to_integral_value() and abs(scaled) < 10**38:
                return number
    return str(value)


def canonical_json(value: Any) -> str:
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


def relaxed(value: Any) -> Json:
    return Json(json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS)))


def expected_scalar(value: Any) -> Any:
    value_type = type(value)
    if value is None:
        return ABSENT
    if value_type in (bool, str, float, bytes):  # bytes: Binary subtype 0
        return value
    if value_type in (int, Int64):
        return int(value)
    if value_type is datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value_type is DatetimeMS:  # years 1..9999 as dates, any other as Extended JSON text
        if MIN_DATE_MS <= int(value) <= MAX_DATE_MS:
            return EPOCH + timedelta(milliseconds=int(value))
        return canonical_json(value)
    if value_type is ObjectId:
        return str(value)
    if value_type is Decimal128:
        return expected_decimal(value)
    if value_type is Binary:
        if value.subtype == 4 and len(value) == 16:
            return str(uuid.UUID(bytes=bytes(value)))
        return bytes(value)
    if value_type in (Regex, Code, Timestamp, MinKey, MaxKey, DBRef):
        return canonical_json(value)
    raise AssertionError(f"no documented representation for {value!r}")


def document_key(value: Any) -> str:
    """``_mongo_key`` of an ``_id``: numbers by value (``1``, ``Int64(1)`` and ``1.0`` are one key), a string
    and an ObjectId with the same text are two."""
    value_type = type(value)
    if value_type is str:
        return "s:" + value
    if value_type is ObjectId:
        return f"o:{value}"
    if value_type in (int, Int64):
        return f"n:{int(value)}"
    if value_type is float:  # the double's exact value, every digit of it
        return f"n:{int(value)}" if value.is_integer() else f"n:{Decimal(value)}"
    raise AssertionError(f"no key for _id {value!r} here")


def _data_keyed(document: Document) -> bool:
    return len(document) > 64 or any(looks_like_data_key(key) for key in document)


@dataclass
class Representation:
    """How one batch of documents lands. ``json_paths``: the paths that had landed as JSON before the batch;
    ``landed`` collects the paths this batch stores as JSON."""

    nesting: int = MAX_NESTING
    merge_root: bool = False
    """Fields of the root table of a merge load, where -0.0 comes back as 0.0 (DuckDB's merge de-duplication, as
    the README says; ``test_negative_zero_survives_replace_and_merged_child_tables``); array elements live in
    child tables, which keep the sign."""
    json_paths: frozenset[FlatPath] = frozenset()
    landed: set[FlatPath] = field(default_factory=set)
    """Fields this batch stores as JSON: later batches and runs store them as JSON too."""

    def document(self, document: Document) -> Document:
        return self._fields(document, 0, (), root=True)

    def _json(self, value: Any, path: FlatPath, remembered: bool = True) -> Json:
        if remembered:
            self.landed.add(path)
        return relaxed(value)

    def _fields(self, document: Document, depth: int, path: FlatPath, root: bool) -> Document:
        result = {}
        for key, value in document.items():
            converted = self._field(value, depth, (*path, key), root)
            if converted is not ABSENT:
                result[key] = converted
        return result

    def _field(self, value: Any, depth: int, path: FlatPath, root: bool) -> Any:
        """``value`` of a field of a document ``depth`` containers deep."""
        if isinstance(value, dict):
            if depth + 1 > self.nesting or path in self.json_paths or _data_keyed(value):
                return self._json(value, path)
            return self._fields(value, depth + 1, path, root) or ABSENT
        if isinstance(value, list):
            if depth + 1 > self.nesting or path in self.json_paths:
                return self._json(value, path)
            return self._array(value, depth + 1, path) or ABSENT
        if root and self.merge_root and type(value) is float and value == 0:
            return 0.0
        return expected_scalar(value)

    def _array(self, values: list[Any], depth: int, path: FlatPath) -> list[Any]:
        """The elements of an array that is itself ``depth`` containers deep."""
        return [self._element(item, depth, path) for item in values]

    def _element(self, item: Any, depth: int, path: FlatPath) -> Any:
        if isinstance(item, dict):
            if _data_keyed(item):
                return self._json(item, path, remembered=False)
            # an element document's fields sit at the array's own depth
            return self._fields(item, depth, path, root=False) or None
        if isinstance(item, list):
            if depth + 1 > self.nesting or path in self.json_paths:
                return self._json(item, path, remembered=False)
            return self._array(item, depth + 1, path) or None
        converted = expected_scalar(item)
        return None if converted is ABSENT else converted


def canon(value: Any) -> Any:
    """A form where ``==`` is the representation's equality: types count (1, 1.0 and True differ), NaN equals
    NaN, -0.0 differs from 0.0, decimals compare by value, datetimes must be timezone-aware."""
    value_type = type(value)
    if value is None:
        return None
    if value_type is dict:
        return {key: canon(item) for key, item in value.items()}
    if value_type is list:
        return [canon(item) for item in value]
    if value_type is float:
        return ("float", "nan") if math.isnan(value) else ("float", value, math.copysign(1.0, value))
    if value_type is datetime:
        return ("datetime", value.astimezone(UTC)) if value.tzinfo is not None else ("naive datetime", value)
    if value_type is Json:
        return ("json", canon(value.value))
    return (value_type.__name__, value)


# --- rebuilding documents from the warehouse ---------------------------------------------------------------


@dataclass
class Row:
    row_id: str
    key: str
    values: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)
    arrays: dict[tuple[str, ...], list[tuple[int, Row]]] = field(default_factory=dict)


_UNSET: Any = object()


def _put(container: Any, path: tuple[str, ...], value: Any, where: str) -> Any:
    # a nested list's own path segment names the element itself (an array in an array)
    path = tuple(key for key in path if key != LIST_LEVEL)
    if not path:
        assert container is _UNSET, f"{where}: two values for one element"
        return value
    if container is _UNSET:
        container = {}
    assert isinstance(container, dict), f"{where}: a value and fields for one element"
    node = container
    for key in path[:-1]:
        node = node.setdefault(key, {})
        assert isinstance(node, dict), f"{where}: {path} goes through a value"
    assert path[-1] not in node, f"{where}: two values at {list(path)}"
    node[path[-1]] = value
    return container


def _build(row: Row, where: str) -> Any:
    result = _UNSET
    for path, value in row.values:
        result = _put(result, path, value, where)
    for path, items in row.arrays.items():
        items.sort(key=lambda item: item[0])
        indexes = [index for index, _ in items]
        assert indexes == list(range(len(items))), f"{where}: array {list(path)} has indexes {indexes}"
        result = _put(result, path, [_element_of(child, where) for _, child in items], where)
    return result


def _element_of(row: Row, where: str) -> Any:
    """An array element: a row without any value is an element without a leaf (null, {} or [])."""
    element = _build(row, where)
    return None if element is _UNSET else element


def _cell(value: Any, tag: str) -> Any:
    return Json(json.loads(value)) if tag == "json" else value


def rebuild(connection: duckdb.DuckDBPyConnection) -> dict[str, Document]:
    """The documents by ``_mongo_key``, from what DuckDB holds: the newest stored schema, the tables, the links."""
    connection.execute("SET TimeZone = 'UTC'")
    newest = connection.execute(f"select schema from {DATASET}._dlt_version order by version desc limit 1")
    schema = json.loads(newest.fetchone()[0])  # type: ignore[index]
    existing = {
        name
        for (name,) in connection.execute(
            "select table_name from information_schema.tables where table_schema = ?", [DATASET]
        ).fetchall()
    }
    tables: dict[tuple[tuple[str, ...], ...], tuple[str, list[Row]]] = {}
    links: dict[str, list[tuple[Any, ...]]] = {}
    for name, table in schema["tables"].items():
        if TABLE_HINT not in table or name not in existing:
            continue
        table_path = tuple(tuple(part) for part in json.loads(table[TABLE_HINT]))
        cursor = connection.execute(f'select * from {DATASET}."{name}"')
        names = [column[0] for column in cursor.description]
        hints = table["columns"]
        data = [
            (position, tuple(json.loads(hints[column][PATH_HINT])), hints[column][TYPE_HINT])
            for position, column in enumerate(names)
            if PATH_HINT in hints.get(column, {})
        ]
        rows = []
        table_links = links[name] = []
        for record in cursor.fetchall():
            cells = dict(zip(names, record, strict=True))
            row = Row(cells["_dlt_id"], cells["_mongo_root_key"] if table_path else cells["_mongo_key"])
            row.values = [
                (path, _cell(record[position], tag)) for position, path, tag in data if record[position] is not None
            ]
            rows.append(row)
            if table_path:
                table_links.append((cells["_dlt_parent_id"], cells["_dlt_root_id"], cells["_dlt_list_idx"]))
        tables[table_path] = (name, rows)
    assert () in tables, "no root table"
    root_name, roots = tables[()]
    by_row_id: dict[tuple[tuple[str, ...], ...], dict[str, Row]] = {(): {row.row_id: row for row in roots}}
    root_keys = {row.row_id: row.key for row in roots}
    assert len(root_keys) == len(roots), f"{root_name}: duplicate _dlt_id"
    assert len({row.key for row in roots}) == len(roots), f"{root_name}: two rows for one _mongo_key"
    for table_path in sorted(tables, key=len):
        if not table_path:
            continue
        name, rows = tables[table_path]
        parents = by_row_id.get(table_path[:-1])
        assert parents is not None, f"{name}: no parent table {table_path[:-1]}"
        by_row_id[table_path] = {row.row_id: row for row in rows}
        for row, (parent_id, root_id, index) in zip(rows, links[name], strict=True):
            parent = parents.get(parent_id)
            assert parent is not None, f"{name}: row {row.values} has no parent row (a stale or duplicate row)"
            assert root_keys.get(root_id) == row.key, f"{name}: _dlt_root_id and _mongo_root_key disagree"
            assert index is not None, f"{name}: a row without _dlt_list_idx"
            parent.arrays.setdefault(table_path[-1], []).append((index, row))
    documents = {}
    for row in roots:
        document = _build(row, root_name)
        documents[row.key] = {} if document is _UNSET else document
    return documents


# --- loading -----------------------------------------------------------------------------------------------


@dataclass
class Warehouse:
    """A mongomock collection, a dlt pipeline into a DuckDB file, and the documents the last load should have
    left in it."""

    folder: Path
    client: mongomock.MongoClient
    documents: list[Document] = field(default_factory=list)
    json_paths: set[FlatPath] = field(default_factory=set)
    """Paths landed as JSON so far: the loader keeps storing them as JSON."""
    expected: dict[str, Any] = field(default_factory=dict)
    """``_mongo_key`` -> the canonical form of the document the warehouse should hold."""
    reader: duckdb.DuckDBPyConnection | None = field(default=None, init=False, repr=False)

    @property
    def database(self) -> Path:
        return self.folder / "warehouse.duckdb"

    def read(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the warehouse, shared by the reads after a load (``load`` closes it first:
        DuckDB refuses dlt's read-write connection while this process reads the file)."""
        if self.reader is None:
            self.reader = duckdb.connect(str(self.database), read_only=True)
        return self.reader

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def store(self, documents: list[Document]) -> None:
        collection = self.client.db[COLLECTION]
        collection.delete_many({})
        if documents:
            collection.insert_many(copy.deepcopy(documents))
        self.documents = documents

    def load(self, write_disposition: str = "merge", **options: Any) -> None:
        self.close()
        pipeline = dlt.pipeline(
            pipeline_name="roundtrip",
            pipelines_dir=str(self.folder / "pipelines"),
            destination=dlt.destinations.duckdb(str(self.database)),
            dataset_name=DATASET,
        )
        options.setdefault("conversion_processes", 0)
        resource = mongodb_collection(
            None, "db", COLLECTION, client=self.client, write_disposition=write_disposition, **options
        )
        pipeline.run(resource, loader_file_format="parquet")
        stored = schema_hash(self.read())
        assert stored == pipeline.default_schema.version_hash, "the warehouse does not hold the newest schema"
        self._expect(write_disposition, options.get("max_table_nesting", MAX_NESTING), options.get("batch_size"))

    def _expect(self, write_disposition: str, nesting: int, batch_size: int | None) -> None:
        """The documents as the load read them (sorted by ``_id``, in batches), each batch storing the paths
        landed as JSON before it as JSON too."""
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        by_key = {document_key(document["_id"]): document for document in self.documents}
        order = [document_key(found["_id"]) for found in self.client.db[COLLECTION].find({}, sort=[("_id", 1)])]
        if write_disposition != "merge":
            self.expected = {}
        for start in range(0, len(order), batch_size):
            batch = Representation(nesting, write_disposition == "merge", frozenset(self.json_paths))
            for key in order[start : start + batch_size]:
                self.expected[key] = canon(batch.document(by_key[key]))
            self.json_paths |= batch.landed

    def rebuilt(self) -> dict[str, Any]:
        rebuilt = rebuild(self.read())
        if currently_in_test_context():
            note(f"rebuilt: {rebuilt!r}")
        return {key: canon(document) for key, document in rebuilt.items()}


def schema_hash(connection: duckdb.DuckDBPyConnection) -> str:
    row = connection.execute(f"select version_hash from {DATASET}._dlt_version order by version desc limit 1")
    return str(row.fetchone()[0])  # type: ignore[index]


@contextmanager
def warehouse() -> Iterator[Warehouse]:
    with tempfile.TemporaryDirectory(prefix="roundtrip") as folder:
        store = Warehouse(Path(folder), mongomock.MongoClient(tz_aware=True))
        try:
            yield store
        finally:
            store.close()


def assert_round_trip(store: Warehouse) -> None:
    assert store.rebuilt() == store.expected


def assert_holds(store: Warehouse, documents: list[Document]) -> None:
    """The warehouse holds exactly ``documents``, given in the representation (``_id`` included)."""
    assert store.rebuilt() == {document_key(document["_id"]): canon(document) for document in documents}


# --- documents ---------------------------------------------------------------------------------------------

def changed(data: st.DataObject, value: Any) -> Any:
    """``value`` with its arrays grown, shrunk, emptied or removed (``ABSENT``), drawn at random."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            new = changed(data, item)
            if new is not ABSENT:
                result[key] = new
        return result
    if not isinstance(value, list):
        return value
    action = data.draw(st.sampled_from(["keep", "grow", "shrink", "empty", "remove", "recurse"]))
    if action == "grow":
        return value + data.draw(st.lists(scalars, min_size=1, max_size=3))
    if action == "shrink":
        return value[: len(value) // 2]
    if action == "empty":
        return []
    if action == "remove":
        return ABSENT
    if action == "recurse":
        return [changed(data, item) if isinstance(item, dict) else item for item in value]
    return value


# --- the properties ----------------------------------------------------------------------------------------

ROUND_TRIP = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@ROUND_TRIP
@given(
    documents=collections,
    write_disposition=st.sampled_from(["replace", "merge"]),
    batch_size=st.sampled_from([1, 2, 1000]),
)
def test_documents_survive_the_round_trip(documents: list[Document], write_disposition: str, batch_size: int) -> None:
    with warehouse() as store:
        store.store(documents)
        store.load(write_disposition, batch_size=batch_size)
        assert_round_trip(store)


def second_version(data: st.DataObject, first: list[Document]) -> list[Document]:
    """``first`` with each document kept, dropped, given other arrays or a new body; and a few new ones."""
    second = []
    for document in first:
        change = data.draw(st.sampled_from(["same", "arrays", "new body", "dropped"]))
        if change == "arrays":
            second.append({"_id": document["_id"], **changed(data, {k: v for k, v in document.items() if k != "_id"})})
        elif change == "new body":
            second.append({"_id": document["_id"], **data.draw(bodies)})
        elif change == "same":
            second.append(document)
    added = data.draw(st.lists(st.tuples(id_kinds, bodies), max_size=2))
    second += [{"_id": make_id(kind, 1000 + number), **body} for number, (kind, body) in enumerate(added)]
    note(f"second version: {second!r}")
    return second


@settings(ROUND_TRIP, max_examples=4)
@given(first=collections, write_disposition=st.sampled_from(["merge", "merge", "replace"]), data=st.data())
def test_reloads_keep_one_copy_and_follow_changes(
    first: list[Document], write_disposition: str, data: st.DataObject
) -> None:
    """Merge: the same documents loaded twice are there once; a changed version (arrays grown, shrunk, emptied,
    removed; new bodies, new documents) replaces them, and documents gone from MongoDB stay as they were.
    Replace: the warehouse holds exactly the new version."""
    second = second_version(data, first)
    with warehouse() as store:
        store.store(first)
        store.load(write_disposition, batch_size=2)
        store.load(write_disposition, batch_size=2)
        assert_round_trip(store)
        store.store(second)
        store.load(write_disposition, batch_size=2)
        assert_round_trip(store)


# --- deeper than max_table_nesting: stored whole as JSON ---------------------------------------------------

DEEP = {
    "_id": 1,
    "a": {"b": {"c": {"d": 1, "e": [1, 2]}}},
    "l": [[[1, "x", None, {"k": math.nan}]], [2]],
    "m": [{"n": {"o": {"p": -0.0}}, "q": [[3]]}],
    "by_id": {"65f1a2b3c4d5e6f708192a3b": {"level": 1}},
    "by_day": [{"2024-03-01": 3}, {"plain": 4}],
    "when": {"at": {"deep": {"x": datetime(2024, 3, 1, 12, 0, 0, 123000)}}},
    "empty": {"x": {"y": {}}},
}


@pytest.mark.parametrize("nesting", [0, 1, 2])
def test_deeper_data_lands_as_json(nesting: int) -> None:
    with warehouse() as store:
        store.store([DEEP])
        store.load("replace", max_table_nesting=nesting)
        assert_round_trip(store)


@settings(ROUND_TRIP, max_examples=3)
@given(
    documents=st.lists(st.tuples(id_kinds, deep_bodies), min_size=1, max_size=4).map(with_ids),
    nesting=st.sampled_from([0, 1, 2]),
    data=st.data(),
)
def test_any_depth_survives_as_tables_or_json(documents: list[Document], nesting: int, data: st.DataObject) -> None:
    """Deeper than ``max_table_nesting`` lands as JSON; a path once stored as JSON stays JSON in the next batches
    and in the next run, here with new bodies for the same documents."""
    with warehouse() as store:
        store.store(documents)
        store.load("merge", max_table_nesting=nesting, batch_size=1)
        assert_round_trip(store)
        store.store([{"_id": document["_id"], **data.draw(deep_bodies)} for document in documents])
        store.load("merge", max_table_nesting=nesting, batch_size=1)
        assert_round_trip(store)


# --- worker processes --------------------------------------------------------------------------------------


def every_type(number: int) -> Document:
    return {
        "_id": make_id(["int", "objectid", "string", "objectid hex"][number % 4], number),
        "s": ["", "é✓名🙂", "\x00nul"][number % 3],
        "i": [Int64(-(2**63)), 2**31 - 1, Int64(2**63 - 1)][number % 3],
        "f": [math.nan, -0.5, math.inf][number % 3],
        "b": number % 2 == 0,
        "when": [datetime(2024, 3, 1, 12, 0, 0, 123000), DatetimeMS(-(10**15))][number % 2],
        "oid": ObjectId(b"abcdefghijkl"),
        "dec": [Decimal128("12.34"), Decimal128("1E+40"), Decimal128("NaN")][number % 3],
        "bin": [Binary(b"\x00\xff", 0), Binary(b"\x01", 5)][number % 2],
        "uuid": Binary.from_uuid(uuid.UUID(int=number)),
        "other": [Regex("^a", "i"), Code("f()"), Timestamp(1, 2), MinKey(), MaxKey(), DBRef("c", 1)][number % 6],
        "drift": [1, "one", 1.0, True, {"one": 1}, [1]][number % 6],
        "Name": number,
        "name": str(number),
        "items": [{"value": number, "tags": ["a", None, number]}, [number, None], number, None, {}],
    }


def test_worker_processes_convert_like_the_main_process() -> None:
    documents = [every_type(number) for number in range(12)]
    # the workers start in the background on first use; batches go to them once they answer: wait for that first,
    # so that the first load already hands them its batches past the first few
    deadline = time.monotonic() + 120  # a bound for a broken pool only: the workers answer within seconds
    while not workers._workers_ready():
        assert time.monotonic() < deadline, "the conversion workers never answered"
        time.sleep(0.05)
    with warehouse() as store:
        store.store(documents)
        for _ in range(20):
            stats = ExtractStats()
            store.load("merge", batch_size=2, conversion_processes=None, stats=stats)
            if stats.batches_in_workers:
                break
        assert stats.batches_in_workers > 0, "no batch was converted by a worker process"
        assert_round_trip(store)


# --- the test's own helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (Decimal128("12.34"), Decimal("12.34")),
        (Decimal128("1.0000000000"), Decimal("1")),
        (Decimal128("1.5E-10"), "1.5E-10"),
        (Decimal128("1E+40"), "1E+40"),
        (Decimal128("NaN"), "NaN"),
        (Decimal128("-0"), "-0"),
        (Decimal128("-0.00"), "-0.00"),
        (Decimal128("0.00"), Decimal("0")),
        (Decimal128("123456789012345678901234567890"), "123456789012345678901234567890"),
        (Decimal128("-12345678901234567890123456789.5"), Decimal("-12345678901234567890123456789.5")),
    ],
)
def test_expected_decimal(value: Decimal128, want: Decimal | str) -> None:
    assert canon(expected_decimal(value)) == canon(want)


def test_canon_tells_types_and_signs_apart() -> None:
    assert canon(1) != canon(1.0) != canon(True)
    assert canon(0.0) != canon(-0.0)
    assert canon(math.nan) == canon(float("nan"))
    assert canon(Decimal("1.5")) == canon(Decimal("1.500000000"))


# --- regressions found by the properties ------------------------------------------------------------------


def test_negative_zero_survives_replace_and_merged_child_tables() -> None:
    document = {"_id": 1, "f": -0.0, "l": [-0.0, {"g": -0.0}]}
    with warehouse() as store:
        store.store([document])
        store.load("replace")
        assert_holds(store, [document])
    with warehouse() as store:
        store.store([document])
        store.load("merge")
        assert_holds(store, [{"_id": 1, "f": 0.0, "l": [-0.0, {"g": -0.0}]}])


def test_a_long_key_of_an_array_loads() -> None:
    with warehouse() as store:
        store.store([{"_id": 1, "k" * 229: [1, 2]}])
        store.load("replace")
        assert_holds(store, [{"_id": 1, "k" * 229: [1, 2]}])


@pytest.mark.parametrize(
    ("items", "landed"),
    [([{"2024-03-01": 1}], [Json({"2024-03-01": 1})]), ([[[1]]], [[Json([1])]])],
    ids=["data-keyed element", "array too deep in an array"],
)
def test_one_element_stored_as_json_leaves_its_array_a_child_table(items: list[Any], landed: list[Any]) -> None:
    with warehouse() as store:
        store.store([{"_id": 1, "items": items}, {"_id": 2, "items": [1]}])
        store.load("merge", batch_size=1)
        assert_holds(store, [{"_id": 1, "items": landed}, {"_id": 2, "items": [1]}])
