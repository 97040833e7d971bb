"""The C walk (``mongodb_dlt.extract._fastwalk``) converts exactly as the Python walk does, or leaves the batch to it.

``bson_arrow.convert_raw_batch`` takes the C walk for the common case and the Python walk (bson's decoder, then
``convert_documents``) for anything else. Every batch here is converted both ways and compared column by column,
Arrow type and value: documents of the common case, where the C walk must answer, and documents of every BSON
type and depth, where it must answer identically or not at all.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import datetime
from typing import Any

import bson
import pytest
from bson import DBRef, ObjectId
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongodb_dlt.config import CollectionOptions
from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract import bson_arrow, bson_decode
from mongodb_dlt.extract.bson_arrow import CODEC_OPTIONS, ConversionSettings, ConvertedBatch, convert_documents
from mongodb_dlt.extract.bson_types import sort_bracket
from mongodb_dlt.extract.source import conversion_settings
from mongodb_dlt_tests.strategies import AWKWARD_KEYS, collections, deep_bodies, id_kinds, with_ids

# without the extension every test here skips, and test_source.py::test_the_c_walk_is_built fails
pytestmark = pytest.mark.skipif(bson_arrow._fastwalk is None, reason="built without the C walk")

SETTINGS = conversion_settings(CollectionOptions())


def python_walk(raw: bytes, conversion: ConversionSettings = SETTINGS) -> ConvertedBatch:
    return convert_documents(bson.decode_all(raw, CODEC_OPTIONS), conversion)


def c_walk(raw: bytes, conversion: ConversionSettings = SETTINGS) -> ConvertedBatch | None:
    walked = bson_arrow._fastwalk.walk(
        raw,
        bson_arrow._max_depth(conversion),
        bson_arrow._classifier(conversion.max_object_keys),
        {},
        bson_arrow._KEY_CLASS_LIMIT,
    )
    return None if walked is None else bson_arrow._batch_from_walk(*walked)


def assert_same(fast: ConvertedBatch, slow: ConvertedBatch) -> None:
    assert fast.documents == slow.documents
    assert fast.keys.equals(slow.keys), (fast.keys, slow.keys)
    assert list(fast.tables) == list(slow.tables)
    for path, table in slow.tables.items():
        other = fast.tables[path]
        assert other.rows == table.rows, path
        assert list(other.columns) == list(table.columns), path  # the same columns in the same order
        for column, array in table.columns.items():
            assert other.columns[column].type == array.type, (path, column)
            # bit-exact, NaN and -0.0 included
            assert _same_values(other.columns[column].to_pylist(), array.to_pylist()), (path, column)
        for links in ("parent_rows", "root_rows", "list_index"):
            mine, theirs = getattr(other, links), getattr(table, links)
            assert (mine is None and theirs is None) or mine.equals(theirs), (path, links)


def _same_values(left: list[Any], right: list[Any]) -> bool:
    return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def batch(documents: list[dict[str, Any]]) -> bytes:
    return b"".join(bson.encode(document) for document in documents)


# -- the common case: the C walk answers, and answers alike ------------------------------------------------------

common_scalars = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.booleans(),
    st.none(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.builds(
        # a negative zero is no DECIMAL value: it lands as text, through the Python walk
        lambda negative, coefficient, exponent: Decimal128(
            f"{'-' if negative and coefficient else ''}{coefficient}E{exponent}"
        ),
        st.booleans(),
        st.integers(0, 10**20 - 1),  # with the exponent below: at most 28 integer and 9 fractional digits
        st.integers(-9, 8),
    ),
)
common_keys = st.sampled_from(["v", "Name", "name", "a.b", "a_b", "ünï", "鍵", "x"])


def common_values(depth: int) -> st.SearchStrategy[Any]:
    if depth >= 2:
        return common_scalars
    return st.one_of(
        common_scalars,
        st.dictionaries(common_keys, st.deferred(lambda: common_values(depth + 1)), max_size=3),
        st.lists(st.one_of(common_scalars, st.deferred(lambda: common_values(depth + 1))), max_size=3),
    )


common_ids = st.one_of(
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.text(max_size=6),
    st.none(),
)
common_documents = st.lists(
    st.tuples(
        st.one_of(common_ids, st.just("missing")),
        st.dictionaries(common_keys, common_values(0), max_size=5),
    ),
    min_size=1,
    max_size=6,
).map(lambda pairs: [body if key == "missing" else {"_id": key, **body} for key, body in pairs])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=common_documents)
def test_the_c_walk_converts_common_documents_exactly_as_the_python_walk(documents: list[dict[str, Any]]) -> None:
    raw = batch(documents)
    fast = c_walk(raw)
    assert fast is not None, "a common-case batch was left to the Python walk"
    assert_same(fast, python_walk(raw))


@pytest.mark.parametrize(
    "value",
    [
        Decimal128("12.34"),
        Decimal128("1.0000000000"),
        Decimal128("-12345678901234567890123456789.5"),  # beyond int64 once scaled
        Decimal128("9999999999999999999999999.999999999"),  # 34 digits, the most Decimal128 holds
        Decimal128("0"),
        Decimal128("0E-6176"),
        Decimal128("0E+6111"),
        DatetimeMS(-62_135_596_800_000),  # 0001-01-01
        DatetimeMS(253_402_300_799_999),  # 9999-12-31T23:59:59.999
        Int64(-(2**63)),
        Int64(2**63 - 1),
        -(2**31),
        -0.0,
        math.nan,
        "",
        "a\x00b",
        [],
        [[1, [2, []]], {}],
        {},
    ],
)
def test_edge_values_of_the_common_case(value: Any) -> None:
    raw = batch([{"_id": 1, "v": value, "w": [value, None]}])
    fast = c_walk(raw, replace(SETTINGS, max_table_nesting=None))
    assert fast is not None
    assert_same(fast, python_walk(raw, replace(SETTINGS, max_table_nesting=None)))


# -- outside the common case: the Python walk answers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "conversion"),
    [
        ([{"_id": 1, "v": Decimal128("1E+40")}], SETTINGS),  # DECIMAL(38, 9) cannot hold it
        ([{"_id": 1, "v": Decimal128("1.5E-10")}], SETTINGS),
        ([{"_id": 1, "v": Decimal128("NaN")}], SETTINGS),
        ([{"_id": 1, "v": Decimal128("-0")}], SETTINGS),  # no DECIMAL value: its text
        ([{"_id": 1, "v": [Decimal128("-0E-6176")]}], SETTINGS),
        ([{"_id": 1, "v": {"w": Decimal128("-0.00")}}], SETTINGS),
        ([{"_id": Decimal128("0.1")}], SETTINGS),  # a decimal _id: its identity is the Python walk's
        ([{"_id": 1, "v": DatetimeMS(253_402_300_800_000)}], SETTINGS),  # year 10000
        ([{"_id": 1, "v": bson.Binary(b"x", 0)}], SETTINGS),
        ([{"_id": 1, "v": bson.Regex("a")}], SETTINGS),
        ([{"_id": 1.5}], SETTINGS),  # a double _id: its identity is the Python walk's
        ([{"_id": 1, "r": DBRef("c", 1)}], SETTINGS),  # a sub-document bson decodes as a DBRef
        ([{"_id": 1, "r": [DBRef("c", 1, "db")]}], SETTINGS),
        ([{"_id": 1, "r": {"$ref": 1, "$id": 2}}], SETTINGS),  # not a valid DBRef: a document to bson
        ([{"_id": 1, "m": {"2024-03-01": 1}}], SETTINGS),  # a data-keyed map lands as JSON
        ([{"_id": 1, "m": {"a": {"b": {"c": 1}}}}], SETTINGS),  # deeper than max_table_nesting 2
        ([{"_id": 1, "a": [[[1]]]}], SETTINGS),
        ([{"_id": 1, "a": 1}], replace(SETTINGS, json_paths=frozenset({("a",)}))),  # not for the C walk at all
    ],
)
def test_the_c_walk_leaves_everything_else_to_the_python_walk(
    documents: list[dict[str, Any]], conversion: ConversionSettings
) -> None:
    raw = batch(documents)
    if bson_arrow._fast_settings(conversion):
        assert c_walk(raw, conversion) is None
    assert_same(bson_arrow.convert_raw_batch(raw, conversion), python_walk(raw, conversion))


def _document(elements: bytes) -> bytes:
    return (len(elements) + 5).to_bytes(4, "little") + elements + b"\x00"


def test_a_repeated_key_or_bad_utf8_is_left_to_the_python_walk() -> None:
    repeated = _document(b"\x10_id\x00" + (1).to_bytes(4, "little") + b"\x10a\x00" + (1).to_bytes(4, "little")
                         + b"\x02a\x00" + (2).to_bytes(4, "little") + b"x\x00")
    assert c_walk(repeated) is None
    with pytest.raises(DocumentConversionError, match="the key 'a' appears more than once"):
        bson_arrow.convert_raw_batch(repeated, SETTINGS)  # bson would keep the last value only

    bad_text = _document(b"\x02a\x00" + (2).to_bytes(4, "little") + b"\xff\x00")
    assert c_walk(bad_text) is None
    with pytest.raises(bson.errors.InvalidBSON):
        bson_arrow.convert_raw_batch(bad_text, SETTINGS)

    truncated = batch([{"_id": 1, "v": "text"}])[:-3]
    assert c_walk(truncated) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=collections)
def test_any_documents_convert_alike_whichever_walk_takes_them(documents: list[dict[str, Any]]) -> None:
    # the whole batch, and each document alone: a batch of one is more often the C walk's
    for raw in (batch(documents), *(batch([document]) for document in documents)):
        fast = c_walk(raw)
        if fast is not None:
            assert_same(fast, python_walk(raw))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents=st.lists(st.tuples(id_kinds, deep_bodies), min_size=1, max_size=4).map(with_ids),
    nesting=st.sampled_from([0, 1, 2, None]),
)
def test_any_depth_converts_alike_whichever_walk_takes_it(documents: list[dict[str, Any]], nesting: int | None) -> None:
    conversion = replace(SETTINGS, max_table_nesting=nesting)
    for raw in (batch(documents), *(batch([document]) for document in documents)):
        fast = c_walk(raw, conversion)
        if fast is not None:
            assert_same(fast, python_walk(raw, conversion))


def test_awkward_keys_convert_alike() -> None:
    documents = [{"_id": number, **{key: number for key in AWKWARD_KEYS if key != "_id"}} for number in range(3)]
    raw = batch(documents)
    fast = c_walk(raw)
    if fast is not None:
        assert_same(fast, python_walk(raw))


def test_damaged_batches_are_left_to_the_python_walk_or_convert_alike() -> None:
    """Bytes changed, cut out or put in at random: the C walk reads nothing outside the batch, and whenever it
    answers, bson decodes the same bytes and the Python walk converts them alike."""
    rng = random.Random(20261122)
    originals = [
        batch([{"_id": ObjectId(), "n": number, "s": "text", "d": {"x": [1.5, {"y": True}]}, "a": [[number]]}])
        for number in range(5)
    ]
    answered = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            change = rng.random()
            if change < 0.6:
                raw[at] = rng.randrange(256)
            elif change < 0.8:
                del raw[at : at + rng.randint(1, 8)]
            else:
                raw[at:at] = rng.randbytes(rng.randint(1, 4))
        fast = c_walk(bytes(raw))
        if fast is not None:
            answered += 1
            assert_same(fast, python_walk(bytes(raw)))
    assert answered > 0  # some damage leaves valid BSON (a changed letter, a changed number)


cursor_values = st.one_of(
    st.integers(0, 5),
    st.sampled_from([datetime(2024, 1, 1), datetime(2024, 1, 2)]),
    st.sampled_from(["a", "b"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(st.tuples(cursor_values, st.dictionaries(common_keys, common_values(0), max_size=3)), max_size=8),
    boundary_at_first=st.booleans(),
    data=st.data(),
)
def test_incremental_batches_convert_alike_with_their_cursor_ends_and_boundary(
    bodies: list[tuple[Any, dict[str, Any]]], boundary_at_first: bool, data: st.DataObject
) -> None:
    """A read sorted by its cursor (type bracket first, as MongoDB sorts): the C walk takes a batch unless it holds
    a document the previous run loaded at its last cursor value, and gives the same last cursor value of each
    bracket, the same keys at it, the same skipped documents."""
    documents = [{"_id": number, "seq": seq, **body} for number, (seq, body) in enumerate(bodies)]
    documents.sort(key=lambda document: (sort_bracket(document["seq"]), document["seq"]))
    conversion = replace(SETTINGS, cursor_path=("seq",))
    boundary: dict[str, frozenset[str]] = {}
    if documents and boundary_at_first:
        keys = data.draw(st.sets(st.sampled_from([bson_arrow.identity(d["_id"]) for d in documents])))
        boundary = {bson_arrow.identity(documents[0]["seq"]): frozenset(keys)}
    raw = batch(documents)
    converted = bson_arrow.convert_raw_batch(raw, conversion, boundary)
    expected = convert_documents(bson.decode_all(raw, CODEC_OPTIONS), conversion, boundary)
    assert_same(converted, expected)
    assert converted.skipped == expected.skipped
    assert [end.keys for end in converted.cursor_ends] == [end.keys for end in expected.cursor_ends]
    assert [(bson_arrow.identity(end.value), type(end.value)) for end in converted.cursor_ends] == [
        (bson_arrow.identity(end.value), type(end.value)) for end in expected.cursor_ends
    ]
    brackets = [sort_bracket(end.value) for end in expected.cursor_ends]
    assert brackets == sorted(set(brackets))  # one end per bracket met, in order
    if documents and not boundary_at_first:
        assert c_walk(raw, conversion) is not None  # the common case: the C walk took it


# -- inspect: what bson's decoder would not keep, found alike in C and in Python ---------------------------------


def _raw_value(depth: int) -> st.SearchStrategy[tuple[int, bytes]]:
    """A BSON value as (type byte, bytes): scalars of several types, Symbols, and documents and arrays whose keys
    are drawn from a few, so that they repeat."""
    text = st.text(max_size=3).map(lambda value: value.replace("\x00", "")).map(
        lambda value: (len(value.encode()) + 1).to_bytes(4, "little") + value.encode() + b"\x00"
    )
    scalars = st.one_of(
        st.integers(-5, 5).map(lambda value: (0x10, value.to_bytes(4, "little", signed=True))),
        text.map(lambda data: (0x02, data)),
        text.map(lambda data: (0x0E, data)),  # Symbol
        text.map(lambda data: (0x0D, data)),  # Code
        st.just((0x0A, b"")),
        st.binary(max_size=3).map(lambda data: (0x05, len(data).to_bytes(4, "little") + b"\x00" + data)),
    )
    if depth >= 3:
        return scalars
    container = st.lists(st.tuples(st.sampled_from(["a", "b", "é", "0"]), st.deferred(lambda: _raw_value(depth + 1))),
                         max_size=4)
    return st.one_of(
        scalars,
        container.map(lambda items: (0x03, _document(b"".join(_raw_element(*item) for item in items)))),
        container.map(lambda items: (0x04, _document(b"".join(_raw_element(*item) for item in items)))),
        st.tuples(text, container).map(lambda pair: (0x0F, _code_with_scope(*pair))),
    )


def _raw_element(key: str, value: tuple[int, bytes]) -> bytes:
    return bytes([value[0]]) + key.encode() + b"\x00" + value[1]


def _code_with_scope(code: bytes, items: list[tuple[str, tuple[int, bytes]]]) -> bytes:
    scope = _document(b"".join(_raw_element(*item) for item in items))
    return (4 + len(code) + len(scope)).to_bytes(4, "little") + code + scope


raw_documents = st.lists(st.tuples(st.sampled_from(["_id", "a", "b", "é"]), _raw_value(0)), max_size=5).map(
    lambda items: _document(b"".join(_raw_element(*item) for item in items))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(raw_documents, min_size=1, max_size=4))
def test_repeated_keys_and_symbols_are_found_alike_in_c_and_python(documents: list[bytes]) -> None:
    raw = b"".join(documents)
    found = bson_arrow._fastwalk.inspect(raw)
    assert found == bson_decode.inspect_batch(raw)
    repeated, with_symbols = found
    # bson's decoder, told to refuse a key it already holds, agrees on which documents repeat one
    refused = []
    for number, document in enumerate(documents):
        try:
            bson.decode(document, CODEC_OPTIONS.with_options(document_class=_RefusingRepeats))
        except (KeyError, bson.errors.InvalidBSON):  # in a sub-document, bson wraps the KeyError
            refused.append(number)
    assert (repeated is None) == (not refused) and (repeated is None or repeated[0] == refused[0])
    assert all(b"\x0e" in documents[number] for number in with_symbols)


class _RefusingRepeats(dict[str, Any]):
    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            raise KeyError(key)
        super().__setitem__(key, value)
