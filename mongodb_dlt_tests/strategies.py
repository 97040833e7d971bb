"""Hypothesis strategies shared by the converter's tests: documents of every BSON type, awkward keys, any depth,
``_id``s of every kind. ``test_roundtrip`` loads them through dlt; ``test_fastwalk`` holds the C walk to the
Python walk with them."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bson import DBRef, MaxKey, MinKey, ObjectId, Regex
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp
from hypothesis import strategies as st

Document = dict[str, Any]
MAX_NESTING = 2
MIN_DATE_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_DATE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

AWKWARD_KEYS = [
    "v", "Name", "name", "NAME", "a b", "a_b", "a-b", "A B", "a.b", "a__b", "名前", "キー", "🙂", "",
    "café", "cafe", "x", "_dlt_id", "_mongo_key", "_mongo_root_key", "_dlt_parent_id", "_dlt_list_idx",
    "_mongo_deleted", "value", "list", "_id", "a", "b", "\uff21", "1a", "_1a", "a__", "__", "_", "aB", "AB", "ß",
    "v__v_string", "v__v_int64", "_dlt_load_id", "_dlt_root_id", "a\nb", "select", "a$", "list_1",
    "k" * 125, "k" * 126,  # names past 120 characters are cut and given a suffix
]  # fmt: skip

MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, 999000)

dates = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=MAX_DATE).map(
        lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000)
    ),
    st.sampled_from([datetime(1, 1, 1), datetime(1970, 1, 1), datetime(1969, 12, 31, 23, 59, 59, 999000), MAX_DATE]),
)

decimals = st.one_of(
    st.builds(
        lambda negative, coefficient, exponent: Decimal128(f"{'-' if negative else ''}{coefficient}E{exponent}"),
        st.booleans(),
        st.integers(0, 10**34 - 1),
        st.integers(-20, 40),
    ),
    st.sampled_from(
        [
            "NaN", "-NaN", "Infinity", "-Infinity", "1E+40", "1.5E-10", "1234567890123456789012345678901234",
            "0.1000000000000000055511151231257827", "99999999999999999999999999.99999999", "1.0000000000",
            "12345678901234567890123456789.5", "123456789012345678901234567890", "-0", "0E-6176", "0E+6111",
            "1E-6176", "9.999999999999999999999999999999999E+6144", "12.34",
        ]
    ).map(Decimal128),
)

no_nul_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=6)

scalars = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.sampled_from([-(2**63), 2**63 - 1, -(2**31), 2**31 - 1, 0]).map(Int64),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0]),
    st.booleans(),
    st.none(),
    dates,
    st.binary(min_size=12, max_size=12).map(ObjectId),
    decimals,
    st.binary(max_size=8).map(lambda data: Binary(data, 0)),
    st.binary(max_size=8),
    st.uuids().map(Binary.from_uuid),
    st.builds(Binary, st.binary(max_size=17), st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 128, 255])),
    st.builds(DatetimeMS, st.integers(-(2**63), 2**63 - 1)),
    st.builds(DatetimeMS, st.sampled_from([MIN_DATE_MS - 1, MIN_DATE_MS, MAX_DATE_MS, MAX_DATE_MS + 1])),
    st.builds(DBRef, st.sampled_from(["users", "c"]), st.integers(0, 3) | st.text(max_size=3)),
    st.builds(Regex, no_nul_text, st.sets(st.sampled_from("imsxlu")).map(lambda flags: "".join(sorted(flags)))),
    st.builds(Code, st.text(max_size=6)),
    st.builds(Code, st.text(max_size=6), st.dictionaries(st.sampled_from("xyz"), st.integers(-5, 5), max_size=2)),
    # not Timestamp(0, 0): the server replaces that one with the current time on insert (mongomock too)
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1)),
    st.just(MinKey()),
    st.just(MaxKey()),
)

# half of the keys from a few, so that the same field often holds several types across documents
keys = st.one_of(st.sampled_from(["v", "Name", "value"]), st.sampled_from(AWKWARD_KEYS))


def values(depth: int, nesting: int = MAX_NESTING) -> st.SearchStrategy[Any]:
    """A field value of a document ``depth`` containers deep, never deeper than ``nesting`` containers."""
    if depth + 1 > nesting:
        return scalars
    return st.one_of(scalars, subdocuments(depth + 1, nesting), arrays(depth + 1, nesting))


def subdocuments(depth: int, nesting: int) -> st.SearchStrategy[Document]:
    return st.dictionaries(keys, st.deferred(lambda: values(depth, nesting)), max_size=4)


def arrays(depth: int, nesting: int) -> st.SearchStrategy[list[Any]]:
    elements = [scalars, subdocuments(depth, nesting)]
    if depth + 1 <= nesting:
        elements.append(st.deferred(lambda: arrays(depth + 1, nesting)))
    return st.lists(st.one_of(elements), max_size=4)


def make_id(kind: str, number: int) -> Any:
    """Unique per number; a neighbour's id may be the same value in another type (1 and "1")."""
    if kind == "int":
        return number
    if kind == "int64":
        return Int64(number)
    if kind == "double":
        return number + 0.5
    if kind == "objectid":
        return ObjectId(number.to_bytes(12, "big"))
    if kind == "numeric string":
        return str(number ^ 1)
    if kind == "objectid hex":
        return str(ObjectId((number ^ 1).to_bytes(12, "big")))
    return f"doc {number} ✓"


bodies = st.dictionaries(keys.filter(lambda key: key != "_id"), values(0), max_size=5)
id_kinds = st.sampled_from(["int", "objectid", "string", "int64", "double", "numeric string", "objectid hex"])


def with_ids(bodies_and_kinds: list[tuple[str, Document]]) -> list[Document]:
    return [{"_id": make_id(kind, number), **body} for number, (kind, body) in enumerate(bodies_and_kinds)]


collections = st.lists(st.tuples(id_kinds, bodies), min_size=1, max_size=8).map(with_ids)


def deep_values(depth: int) -> st.SearchStrategy[Any]:
    """Values of any depth up to 4 containers, some sub-documents keyed by data (dates, numbers, ObjectIds)."""
    if depth >= 4:
        return scalars
    any_keys = st.one_of(keys, st.sampled_from(["2024-03-01", "42", "-1.5", "65f1a2b3c4d5e6f708192a3b"]))
    return st.one_of(
        scalars,
        st.dictionaries(any_keys, st.deferred(lambda: deep_values(depth + 1)), max_size=3),
        st.lists(st.deferred(lambda: deep_values(depth + 1)), max_size=3),
    )


deep_bodies = st.dictionaries(keys.filter(lambda key: key != "_id"), deep_values(0), max_size=4)


