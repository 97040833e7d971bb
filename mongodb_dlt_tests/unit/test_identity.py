"""A value keeps its identity through the converter.

``_mongo_key`` (``bson_types.identity``) is equal for two ``_id``s exactly when MongoDB holds them equal: numbers
by exact value, whatever their type (the server compares a Decimal128 with a double by exact value too,
``compareDecimalToDouble``), every NaN one key, -0 and 0 one key. And the Python walk keeps what bson's decoder
alone would lose: a Decimal128 negative zero, a Symbol, the values of a key repeated in one document.
"""

from __future__ import annotations

import math
from decimal import Decimal, DecimalException
from fractions import Fraction
from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import given, settings
from hypothesis import strategies as st

from mongodb_dlt.config import CollectionOptions
from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract import bson_arrow, bson_decode
from mongodb_dlt.extract.bson_types import Symbol, identity
from mongodb_dlt.extract.source import conversion_settings
from mongodb_dlt_tests.strategies import decimals

SETTINGS = conversion_settings(CollectionOptions())

# --- numbers: one key exactly when MongoDB holds them equal ---------------------------------------------------

def exact(value: Any) -> Any:
    """The value MongoDB compares: a Fraction, or the name of a special value."""
    number = value.to_decimal() if type(value) is Decimal128 else value
    if isinstance(number, Decimal) and not number.is_finite():
        return "nan" if number.is_nan() else ("-inf" if number.is_signed() else "inf")
    if isinstance(number, float) and not math.isfinite(number):
        return "nan" if math.isnan(number) else ("-inf" if number < 0 else "inf")
    return Fraction(number)


def decimal128_of(number: int | float) -> Decimal128 | None:
    """``number`` as a Decimal128 when one holds it exactly (34 digits at most), else None."""
    try:
        return Decimal128(Decimal(number))  # exact: Decimal128's context traps Inexact
    except DecimalException:
        return None


def same_number_in_other_types(number: Any) -> list[Any]:
    """``number`` (an int, a double or a Decimal128) and its exact equals of the other numeric types, and, for a
    double, the Decimal128 of its shortest text (``0.1``), which is another number unless the double is it."""
    found = [number]
    value = exact(number)
    if isinstance(value, Fraction):
        if value.denominator == 1 and -(2**63) <= value < 2**63:
            found += [int(value), Int64(int(value))]
        as_double = float(value) if abs(value) < 2**1024 else math.inf
        if math.isfinite(as_double) and Fraction(as_double) == value:
            found.append(as_double)
        as_decimal = decimal128_of(value.numerator) if value.denominator == 1 else None
        if as_decimal is None and type(number) is float:
            as_decimal = decimal128_of(number)
        if as_decimal is not None:
            found.append(as_decimal)
    if type(number) is float and math.isfinite(number):
        found.append(Decimal128(repr(number)))  # 0.1 as a decimal: another number than the double 0.1
    return found


numbers = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda value: round(value, 2)),  # 9.99, 0.3
    st.sampled_from([0.1, 0.2, 0.30000000000000004, 9.99, 1e20, 2.0**-16, 5e-324, -0.0, 2.0**63, 1e300]),
    decimals,
)


@settings(max_examples=400, deadline=None)
@given(first=numbers, second=numbers, use_equal=st.booleans(), pick=st.integers(0, 10))
def test_two_numbers_share_a_key_exactly_when_their_values_are_equal(
    first: Any, second: Any, use_equal: bool, pick: int
) -> None:
    if use_equal:  # most random pairs differ: half the time compare with an equal (or a near) one of another type
        candidates = same_number_in_other_types(first)
        second = candidates[pick % len(candidates)]
    assert (identity(first) == identity(second)) == (exact(first) == exact(second)), (first, second)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (0.1, Decimal128("0.1"), False),  # the double is 0.1000000000000000055511151231257827021181583404541015625
        (9.99, Decimal128("9.99"), False),
        (0.30000000000000004, Decimal128("0.30000000000000004"), False),
        (0.5, Decimal128("0.5"), True),
        (0.1, Decimal128("0.1000000000000000055511151231257827"), False),  # 34 digits: still not all of them
        (1, 1.0, True),
        (1, Int64(1), True),
        (1, Decimal128("1"), True),
        (1, Decimal128("1.000"), True),
        (1.0, Decimal128("1E+0"), True),
        (1e20, Decimal128("1E+20"), True),
        (1e20, Int64(10**19), False),
        (2.0**63, Decimal128("9223372036854775808"), True),
        (float(2**53), 2**53 + 1, False),
        (Int64(2**53 + 1), Decimal128(str(2**53 + 1)), True),
        (-0.0, 0, True),
        (-0.0, Decimal128("-0"), True),
        (Decimal128("-0E-6176"), Decimal128("0E+6111"), True),
        (math.nan, Decimal128("NaN"), True),
        (math.nan, Decimal128("-NaN"), True),
        (Decimal128("sNaN"), Decimal128("NaN"), True),
        (math.inf, Decimal128("Infinity"), True),
        (-math.inf, Decimal128("-Infinity"), True),
        (math.inf, -math.inf, False),
        # 34 digits, one apart in the last: a 28-digit rounding made them one key
        (Decimal128("1234567890123456789012345678901.234"), Decimal128("1234567890123456789012345678901.235"), False),
        (Decimal128("1.000000000000000000000000000000001"), Decimal128("1"), False),
        (Decimal128("1.5E-10"), Decimal128("0.000000000150"), True),
        (Decimal128("9.999999999999999999999999999999999E+6144"), Decimal128("9" * 34 + "E+6111"), True),
        (1, "1", False),
        (Symbol("a"), "a", True),  # the server orders a Symbol and a String as one type
        (None, "null", False),
    ],
)
def test_keys(first: Any, second: Any, same: bool) -> None:
    assert (identity(first) == identity(second)) is same


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (1, "n:1"),
        (1.0, "n:1"),
        (Decimal128("1.000"), "n:1"),
        (1e20, "n:100000000000000000000"),
        (-0.0, "n:0"),
        (0.5, "n:0.5"),
        (0.1, "n:0.1000000000000000055511151231257827021181583404541015625"),
        (Decimal128("0.1"), "n:0.1"),
        (Decimal128("-1.50"), "n:-1.5"),
        (Decimal128("1.5E-10"), "n:1.5E-10"),
        (Decimal128("1E+6144"), "n:1" + "0" * 6144),  # past int()'s 4300 digits
        (Decimal128("-0.00"), "n:0"),
        (math.nan, "n:nan"),
        (Decimal128("NaN"), "n:nan"),
        (math.inf, "n:inf"),
        (Decimal128("-Infinity"), "n:-inf"),
        ("1", "s:1"),
    ],
)
def test_key_texts(value: Any, key: str) -> None:
    """The texts stored in ``_mongo_key``: integers as today, other numbers as their exact decimal value."""
    assert identity(value) == key


# --- what bson's decoder alone would lose ---------------------------------------------------------------------


def element(type_byte: int, key: str, payload: bytes) -> bytes:
    return bytes([type_byte]) + key.encode() + b"\x00" + payload


def document(*elements: bytes) -> bytes:
    """A BSON document of these elements, as they are: a key may repeat, which ``bson.encode`` cannot write."""
    body = b"".join(elements) + b"\x00"
    return (len(body) + 4).to_bytes(4, "little") + body


def int32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


def string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return int32(len(data)) + data


def symbol(key: str, text: str) -> bytes:
    return element(0x0E, key, string(text))


@pytest.fixture(params=["C", "Python"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each case with the C extension, and as a build without it converts."""
    if request.param == "Python":
        monkeypatch.setattr(bson_arrow, "_fastwalk", None)
        monkeypatch.setattr(bson_decode, "_fastwalk", None)
    elif bson_arrow._fastwalk is None:
        pytest.skip("built without the C walk")
    return str(request.param)


def root_column(raw: bytes, path: tuple[str, ...], tag: str) -> list[Any]:
    return bson_arrow.convert_raw_batch(raw, SETTINGS).tables[()].columns[(path, tag)].to_pylist()


@pytest.mark.parametrize("text", ["-0", "-0E-6176", "-0.00", "-0E+6111"])
def test_a_negative_zero_decimal_lands_as_its_text(walk: str, text: str) -> None:
    raw = bson.encode({"_id": 1, "v": Decimal128(text), "w": Decimal128("0.00")})
    assert root_column(raw, ("v",), "decimal_text") == [text]
    assert root_column(raw, ("w",), "decimal") == [Decimal("0")]  # a positive zero stays a DECIMAL


def test_a_negative_large_form_decimal_is_a_negative_zero() -> None:
    # the non-canonical "large coefficient" form reads as zero; with the sign bit set, as -0
    high = (1 << 63) | (3 << 61) | (5 << 47)
    value = Decimal128.from_bid((1).to_bytes(8, "little") + high.to_bytes(8, "little"))
    raw = bson.encode({"_id": 1, "v": value})
    assert root_column(raw, ("v",), "decimal_text") == [str(value)]
    assert bson_arrow._fastwalk is None or bson_arrow._fastwalk.walk(raw, 2, bson_arrow._classifier(64), {}, 1) is None


def test_a_symbol_lands_as_extended_json_wherever_it_is(walk: str) -> None:
    raw = document(
        element(0x10, "_id", int32(1)),
        symbol("s", "hello"),
        element(0x02, "t", string("hello")),
        element(0x03, "sub", document(symbol("x", "in a document"))),
        element(0x04, "list", document(symbol("0", "in an array"), element(0x02, "1", string("a string")))),
        element(0x03, "deep", document(element(0x03, "a", document(element(0x03, "b", document(symbol("c", "z"))))))),
    )
    batch = bson_arrow.convert_raw_batch(raw, SETTINGS)
    root = batch.tables[()].columns
    assert root[(("s",), "symbol")].to_pylist() == ['{"$symbol": "hello"}']
    assert root[(("t",), "string")].to_pylist() == ["hello"]
    assert root[(("sub", "x"), "symbol")].to_pylist() == ['{"$symbol": "in a document"}']
    assert root[(("deep", "a", "b"), "json")].to_pylist() == ['{"c":{"$symbol":"z"}}']  # deeper than nesting 2
    items = batch.tables[(("list",),)].columns
    assert items[((), "symbol")].to_pylist() == ['{"$symbol": "in an array"}', None]
    assert items[((), "string")].to_pylist() == [None, "a string"]


def test_a_symbol_id_is_the_key_of_its_string(walk: str) -> None:
    raw = document(symbol("_id", "a")) + document(element(0x02, "_id", string("b")))
    batch = bson_arrow.convert_raw_batch(raw, SETTINGS)
    assert batch.keys.to_pylist() == ["s:a", "s:b"]
    assert batch.tables[()].columns[(("_id",), "symbol")].to_pylist() == ['{"$symbol": "a"}', None]


def test_a_symbol_in_code_with_scope_is_kept(walk: str) -> None:
    scope = document(symbol("v", "x"))
    code = string("f()")
    raw = document(element(0x10, "_id", int32(1)), element(0x0F, "c", int32(4 + len(code) + len(scope)) + code + scope))
    assert root_column(raw, ("c",), "code_with_scope") == ['{"$code": "f()", "$scope": {"v": {"$symbol": "x"}}}']


REPEATED = [
    (document(element(0x10, "_id", int32(7)), element(0x10, "a", int32(1)), element(0x02, "a", string("x"))), "a"),
    (document(element(0x10, "_id", int32(7)), element(0x03, "s", document(
        element(0x10, "k", int32(1)), element(0x10, "j", int32(1)), element(0x10, "k", int32(2))))), "s.k"),
    (document(element(0x10, "_id", int32(7)), element(0x04, "items", document(
        element(0x03, "0", document(element(0x10, "k", int32(1)))),
        element(0x03, "1", document(element(0x10, "k", int32(1)), element(0x10, "k", int32(2))))))), "items.1.k"),
    (document(element(0x10, "_id", int32(7)), element(0x10, "_id", int32(8))), "_id"),
    (document(element(0x10, "_id", int32(7)), symbol("y", "s"), element(0x10, "y", int32(1))), "y"),
]


@pytest.mark.parametrize(("raw", "dotted"), REPEATED, ids=["top level", "sub-document", "in an array", "_id", "symbol"])
def test_a_repeated_key_fails_its_document_by_id_and_dotted_key(walk: str, raw: bytes, dotted: str) -> None:
    good = bson.encode({"_id": 1, "a": 1})
    with pytest.raises(DocumentConversionError, match=f"the key '{dotted}' appears more than once"):
        bson_arrow.convert_raw_batch(good + raw, SETTINGS)
    error = bson_arrow.locate_conversion_error(good + raw, SETTINGS, None, "shop.orders", ValueError())
    assert str(error).startswith(f"shop.orders: document _id={{\"$numberInt\": \"7\"}}, field '{dotted}': "), error


def test_repeated_array_positions_lose_nothing() -> None:
    # bson reads an array's elements in order, whatever their keys
    raw = document(element(0x10, "_id", int32(1)), element(0x04, "l", document(
        element(0x10, "0", int32(5)), element(0x10, "0", int32(6)))))
    assert bson_decode.inspect_batch(raw) == (None, [])
    batch = bson_arrow.convert_raw_batch(raw, SETTINGS)
    assert batch.tables[(("l",),)].columns[((), "int64")].to_pylist() == [5, 6]
