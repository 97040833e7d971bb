"""The type table of the converter: each BSON type's tag, its Arrow type, and the typed identity of a key.

Values of one field that hold several BSON types get one column per tag (``columns.py`` names them); nothing is
ever coerced from one type into another. The tags and how each lands:

=========================  =================  =======================================================
BSON                       tag                Arrow value (DuckDB / BigQuery column)
=========================  =================  =======================================================
String                     ``string``         string (VARCHAR / STRING)
Int32, Int64               ``int64``          int64 (BIGINT / INT64): every Int32 is an exact Int64
Double                     ``double``         float64, NaN, +-Infinity and -0.0 kept (DOUBLE / FLOAT64)
Boolean                    ``bool``           bool (BOOLEAN / BOOL)
Date, years 1..9999        ``date``           timestamp[us, UTC] from the ms (TIMESTAMPTZ / TIMESTAMP)
Date, other years          ``date_text``      Extended JSON text ``{"$date": {"$numberLong": "..."}}``
ObjectId                   ``objectid``       24 lowercase hex characters (VARCHAR / STRING)
Decimal128 that fits       ``decimal``        decimal128(38, 9), exact (DECIMAL(38,9) / NUMERIC)
other Decimal128           ``decimal_text``   its exact string: ``1E+40``, ``NaN``, ``-0``, 34 digits
Binary subtype 4 (UUID)    ``uuid``           canonical ``xxxxxxxx-xxxx-...`` text
Binary subtype 0           ``binary``         bytes (BLOB / BYTES)
Binary, other subtypes     ``binary_<n>``     bytes
Timestamp, Regex, Code,    ``timestamp``,     Extended JSON v2 canonical text, one tag per BSON type
Code with scope, MinKey,   ``regex``, ...     (a Symbol: ``{"$symbol": ...}``, tag ``symbol``)
MaxKey, DBRef, Symbol...
Null or missing            (no tag)           NULL in every column of the field
Embedded document          (flattened)        one column per leaf, path ``(parent, child)``
Array                      (child table)      rows of a child table; scalars in its ``value`` column
deeper than max nesting,   ``json``           relaxed Extended JSON text, dlt's ``json`` type
data-keyed map, json_paths
=========================  =================  =======================================================
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
from bson import DBRef, MaxKey, MinKey, ObjectId, Regex, json_util
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp

FieldPath = tuple[str, ...]
"""Raw MongoDB keys from a table's row down to a leaf; ``()`` is the element itself of a scalar array."""

TablePath = tuple[FieldPath, ...]
"""Where a child table's rows come from: the field path of an array in the root document, then the field path
of an array inside that array's elements, and so on (``(("items",), ("tags",))``); ``()`` is the root table.
``(LIST_LEVEL,)`` is an array directly inside an array."""

LIST_LEVEL = "\x00list"
"""Path segment of an array nested directly in an array (MongoDB keys cannot contain NUL)."""

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 9
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
_DECIMAL_LIMIT = 10**DECIMAL_PRECISION
_POWERS_OF_TEN = [10**power for power in range(DECIMAL_PRECISION + 1)]
# Decimal128's BID layout (high 64 bits): sign, then 11110/11111 for infinities/NaN, 11 for the large form.
_INFINITY_MASK = 0x78 << 56
_LARGE_FORM_MASK = 3 << 61
_EXPONENT_BIAS = 6176
_COEFFICIENT_HIGH_MASK = (1 << 49) - 1

# Dates Python, DuckDB's client and every warehouse read without overflow: 0001-01-01 .. 9999-12-31.
_MIN_DATE_MS = -62_135_596_800_000
_MAX_DATE_MS = 253_402_300_799_999

CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict,
    tz_aware=False,
    # dates as plain milliseconds: no datetime objects to build, and no year range to fall over
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    # UUIDs stay Binary so the subtype decides, never the client's configuration
    uuid_representation=UuidRepresentation.UNSPECIFIED,
)

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.timestamp("us", tz="UTC"),
    "objectid": pa.string(),
    "decimal": DECIMAL_TYPE,
    "uuid": pa.string(),
    "binary": pa.binary(),
    "json": pa.string(),
}
"""Arrow type of each tag; tags not listed (Extended JSON text, ``decimal_text``, ``date_text``) are strings."""



@dataclass(frozen=True, slots=True)
class Symbol:
    """A BSON Symbol (type 0x0E, deprecated). bson's decoder reads one as a plain ``str``, which would land it as
    a String; ``bson_arrow`` decodes the documents that hold one itself, into this, so it lands as its canonical
    Extended JSON ``{"$symbol": ...}`` and a round trip still tells it from a String."""

    text: str


_EXTENDED_JSON_TAGS: dict[type, str] = {
    Timestamp: "timestamp",
    Symbol: "symbol",
    Regex: "regex",
    MinKey: "minkey",
    MaxKey: "maxkey",
    DBRef: "dbref",
}
_CANONICAL = json_util.CANONICAL_JSON_OPTIONS
_RELAXED = json_util.RELAXED_JSON_OPTIONS
_INFINITY = float("inf")

_DATA_KEY = re.compile(
    r"[0-9a-fA-F]{24}|[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}"  # ObjectId, md5, sha1, sha256
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUID
    r"|\d{4}-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?"  # ISO date or month
    r"|[+-]?\d+(\.\d+)?"  # number
)


def arrow_type(tag: str) -> pa.DataType:
    """The Arrow type of a tag's column."""
    if tag.startswith("binary_"):
        return pa.binary()
    return ARROW_TYPES.get(tag, pa.string())


def looks_like_data_key(key: str) -> bool:
    """True for keys that are data rather than field names: ObjectIds, hashes, UUIDs, ISO dates, numbers."""
    return _DATA_KEY.fullmatch(key) is not None


def keys_are_data(keys: Sequence[str], max_object_keys: int) -> bool:
    """A document with these keys is a data-keyed map, stored whole as JSON: more than ``max_object_keys`` keys,
    or any key that looks like data."""
    return len(keys) > max_object_keys or any(looks_like_data_key(key) for key in keys)


def extended_json(value: Any) -> str:
    """Canonical Extended JSON v2 text of one value: lossless, the type is in the text."""
    if isinstance(value, re.Pattern):
        value = Regex.from_native(value)
    return json_util.dumps(value, json_options=_CANONICAL, default=_symbol_json)


def relaxed_json(value: Any) -> str:
    """Relaxed Extended JSON text of a sub-document or array stored whole (what ``mongoexport`` writes)."""
    return json_util.dumps(value, json_options=_RELAXED, separators=(",", ":"), default=_symbol_json)


def _symbol_json(value: Any) -> dict[str, str]:
    """What ``json_util`` leaves to ``json.dumps``: only ``Symbol``, which it does not know (both Extended JSON
    forms write a Symbol as ``{"$symbol": text}``)."""
    if type(value) is Symbol:
        return {"$symbol": value.text}
    raise TypeError(f"{type(value).__name__} is not a BSON value")


def tagged(value: Any) -> tuple[str, Any] | None:
    """The tag and the Arrow-ready value of one scalar BSON value (as ``CODEC_OPTIONS`` decodes it); None for
    null. Documents and arrays never get here: the walker flattens them or stores them as JSON."""
    value_type = type(value)
    if value_type is str:
        return "string", value
    if value_type is bool:
        return "bool", value
    if value_type is int or value_type is Int64:
        return "int64", int(value)
    if value_type is float:
        return "double", value
    if value_type is ObjectId:
        return "objectid", value.binary
    if value_type is DatetimeMS:
        milliseconds = int(value)
        if _MIN_DATE_MS <= milliseconds <= _MAX_DATE_MS:
            return "date", milliseconds
        return "date_text", extended_json(value)
    if value_type is Decimal128:
        unscaled = decimal_unscaled(value)
        if unscaled is not None:
            return "decimal", unscaled
        return "decimal_text", str(value)
    if value is None:
        return None
    if value_type is Binary or value_type is bytes:
        subtype = getattr(value, "subtype", 0)
        if subtype == 4 and len(value) == 16:
            return "uuid", str(uuid.UUID(bytes=bytes(value)))
        return ("binary" if subtype == 0 else f"binary_{subtype}"), bytes(value)
    if value_type is Code:  # a str subclass: before any isinstance(str)
        return ("code_with_scope" if value.scope is not None else "code"), extended_json(value)
    tag = _EXTENDED_JSON_TAGS.get(value_type)
    if tag is not None:
        return tag, extended_json(value)
    return type(value).__name__.lower(), extended_json(value)


def decimal_unscaled(value: Decimal128) -> int | None:
    """The integer ``value * 10**9`` when DECIMAL(38, 9) holds ``value`` exactly, else None (NaN, infinities,
    negative zeros, more than 9 fractional digits, 30 or more integer digits). Read straight from the IEEE
    754-2008 BID bits: ``Decimal128.to_decimal`` costs ten times as much."""
    high, low = value.bid[8:], value.bid[:8]
    bits_high = int.from_bytes(high, "little")
    if bits_high & _INFINITY_MASK == _INFINITY_MASK:  # NaN or an infinity
        return None
    negative = bits_high >> 63
    if bits_high & _LARGE_FORM_MASK == _LARGE_FORM_MASK:
        # the "large coefficient" form can only hold coefficients above 10**34: non-canonical, read as 0
        return None if negative else 0
    exponent = ((bits_high >> 49) & 0x3FFF) - _EXPONENT_BIAS
    coefficient = ((bits_high & _COEFFICIENT_HIGH_MASK) << 64) | int.from_bytes(low, "little")
    if coefficient == 0:
        return None if negative else 0  # a DECIMAL column has no -0: "-0", "-0.00" land as their text
    shift = exponent + DECIMAL_SCALE
    if shift > DECIMAL_PRECISION or shift < -DECIMAL_PRECISION:
        return None
    if shift < 0:  # more than 9 fractional digits: exact only when the extra ones are zeros ("1.0000000000")
        unscaled, remainder = divmod(coefficient, _POWERS_OF_TEN[-shift])
        if remainder:
            return None
    else:
        unscaled = coefficient * _POWERS_OF_TEN[shift]
    if unscaled >= _DECIMAL_LIMIT:
        return None
    return -unscaled if negative else unscaled


def identity(value: Any) -> str:
    """A text key that is equal for two values exactly when MongoDB holds them equal as ``_id``s: the type is
    part of it (``1`` and ``"1"`` differ), numbers compare by exact value whatever their type, as the server
    compares them (``1``, ``1.0``, ``NumberLong(1)`` and ``Decimal128("1.000")`` are one key; the double 0.1 and
    ``Decimal128("0.1")`` are two, the double being 0.1000000000000000055511151231257827...), null is a key of its
    own, and a Symbol is the string of its text (the server orders them as one type)."""
    value_type = type(value)
    if value_type is str:
        return "s:" + value
    if value_type is ObjectId:
        return "o:" + str(value)
    if value_type is bool:
        return "b:" + ("true" if value else "false")
    if value_type is int or value_type is Int64:
        return f"n:{int(value)}"
    if value_type is float:
        if value.is_integer():
            return f"n:{int(value)}"
        if value != value or value in (_INFINITY, -_INFINITY):
            return f"n:{value!r}"  # nan, inf, -inf
        return "n:" + _exact_text(Decimal(value))  # Decimal(float) is the double's exact binary value
    if value_type is Decimal128:
        number = value.to_decimal()  # exact: the context it uses holds Decimal128's 34 digits
        if number.is_nan():  # the server holds every NaN equal, double or decimal, quiet or signalling
            return "n:nan"
        if number.is_infinite():
            return "n:-inf" if number.is_signed() else "n:inf"
        return "n:" + _exact_text(number)
    if value is None:
        return "null"
    if value_type is DatetimeMS:
        return f"d:{int(value)}"
    if value_type is Symbol:
        return "s:" + value.text
    return "x:" + extended_json(value)


def _exact_text(number: Decimal) -> str:
    """The text of a finite decimal's exact value, one per value: an integer's digits (``100000000000000000000``,
    ``0`` for -0), else the decimal without trailing zeros (``0.1``, ``1.5E-10``). Built from the digits:
    ``Decimal.normalize`` would round to the context's 28 digits, and ``int()`` refuses 4300 digits and more."""
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
    exponent += len(digits) - significant
    digits = digits[:significant]
    if digits == (0,):
        return "0"
    if exponent >= 0:
        return ("-" if sign else "") + "".join(map(str, digits)) + "0" * exponent
    return str(Decimal((sign, digits, exponent)))


def composite_identity(document: Mapping[str, Any], key_paths: Sequence[FieldPath]) -> str:
    """``identity`` of the primary key fields of ``document`` (dotted paths), one text for the whole key."""
    if len(key_paths) == 1:
        path = key_paths[0]
        return identity(document.get(path[0]) if len(path) == 1 else get_path(document, path))
    return "\x1f".join(identity(get_path(document, path)) for path in key_paths)


def get_path(document: Mapping[str, Any], path: FieldPath) -> Any:
    value: Any = document
    for key in path:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value


# The server's canonical type ranks (src/mongo/bson/bsontypes.h, canonicalizeBSONType): ``$gt``/``$gte``/``$lt``
# match values of the operand's bracket only, and a sort orders brackets by these ranks. Values as
# ``CODEC_OPTIONS`` decodes them (a DBRef is an embedded document; bool before int: bool subclasses int).
BRACKET_MIN_KEY, BRACKET_NULL, BRACKET_NUMBER, BRACKET_STRING, BRACKET_OBJECT, BRACKET_ARRAY = -1, 5, 10, 15, 20, 25
BRACKET_BINARY, BRACKET_OBJECT_ID, BRACKET_BOOL, BRACKET_DATE, BRACKET_TIMESTAMP, BRACKET_REGEX = 30, 35, 40, 45, 47, 50
BRACKET_CODE, BRACKET_CODE_WITH_SCOPE, BRACKET_MAX_KEY = 60, 65, 127
_BRACKETS: dict[type, int] = {
    bool: BRACKET_BOOL,
    int: BRACKET_NUMBER,
    Int64: BRACKET_NUMBER,
    float: BRACKET_NUMBER,
    Decimal128: BRACKET_NUMBER,
    str: BRACKET_STRING,
    dict: BRACKET_OBJECT,
    DBRef: BRACKET_OBJECT,
    list: BRACKET_ARRAY,
    Binary: BRACKET_BINARY,
    bytes: BRACKET_BINARY,
    ObjectId: BRACKET_OBJECT_ID,
    DatetimeMS: BRACKET_DATE,
    Timestamp: BRACKET_TIMESTAMP,
    Regex: BRACKET_REGEX,
    re.Pattern: BRACKET_REGEX,
    MinKey: BRACKET_MIN_KEY,
    MaxKey: BRACKET_MAX_KEY,
}


def sort_bracket(value: Any) -> int:
    """The rank of ``value``'s type bracket in MongoDB's comparison and sort order (``BRACKET_*``)."""
    if value is None:
        return BRACKET_NULL
    if isinstance(value, Code):  # a str subclass
        return BRACKET_CODE if value.scope is None else BRACKET_CODE_WITH_SCOPE
    rank = _BRACKETS.get(type(value))
    if rank is not None:
        return rank
    if isinstance(value, dt.datetime):
        return BRACKET_DATE
    for value_type, type_rank in _BRACKETS.items():
        if isinstance(value, value_type):
            return type_rank
    raise TypeError(f"no BSON type bracket for {type(value).__name__}")
