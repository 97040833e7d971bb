"""Teaches mongomock 4.3 the BSON comparison order of the types it cannot compare.

mongomock raises ``NotImplementedError: Mongomock does not know how to sort ...`` as soon as a filter
(``$gt``/``$gte``/``$lt``/``$lte``) or a sort meets a Decimal128, Timestamp, MinKey or MaxKey value, so
``{"amount": {"$gte": Decimal128("10")}}`` or ``sort={"amount": 1}`` fails, and so does any range filter
on a field that holds such a value in some document. It also ranks Code as a string (Code subclasses
str). A real server orders every type (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/),
so the stand-in patches mongomock's two comparison functions, once per process, when the first
``MongoStandIn`` is created; importing ``mongodb_dlt.testing`` changes nothing. Code that uses a bare
mongomock client with such values calls ``patch_mongomock_bson_ordering()`` itself. The patch only adds
cases mongomock refused or misranked; everything else is delegated.
"""

from __future__ import annotations

import decimal
import math
import re
import threading
from collections.abc import Callable
from typing import Any

from bson import Code, Decimal128, MaxKey, MinKey, Regex, Timestamp
from mongomock import filtering

# The server's canonical type ranks (src/mongo/bson/bsontypes.h, canonicalizeBSONType).
_NUMBER, _TIMESTAMP, _REGEX, _CODE, _CODE_WITH_SCOPE = 10, 47, 50, 60, 65
_MIN_KEY, _MAX_KEY = -1, 127

_patch_lock = threading.Lock()
_patched = False


def patch_mongomock_bson_ordering() -> None:
    """Installs the comparison patch into ``mongomock.filtering`` (idempotent, thread-safe)."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        original_type = filtering._get_compare_type
        original_compare = filtering.bson_compare
        filtering._get_compare_type = _compare_type_with(original_type)
        filtering.bson_compare = _bson_compare_with(original_compare)
        _patched = True


def _compare_type_with(original: Callable[[Any], int]) -> Callable[[Any], int]:
    def compare_type(value: Any) -> int:
        if isinstance(value, Code):
            return _CODE if value.scope is None else _CODE_WITH_SCOPE
        if isinstance(value, Decimal128):
            return _NUMBER
        if isinstance(value, Timestamp):
            return _TIMESTAMP
        if isinstance(value, MinKey):
            return _MIN_KEY
        if isinstance(value, MaxKey):
            return _MAX_KEY
        return original(value)

    return compare_type


def _bson_compare_with(original: Callable[..., bool]) -> Callable[..., bool]:
    def bson_compare(op: Callable[[Any, Any], bool], a: Any, b: Any, can_compare_types: bool = True) -> bool:
        a_type, b_type = filtering._get_compare_type(a), filtering._get_compare_type(b)
        if a_type != b_type:
            return original(op, a, b, can_compare_types)
        if a_type == _NUMBER and (isinstance(a, Decimal128) or isinstance(b, Decimal128)):
            return op(_as_number(a), _as_number(b))
        if a_type == _TIMESTAMP:
            return op((a.time, a.inc), (b.time, b.inc))
        if a_type in (_MIN_KEY, _MAX_KEY):
            return op(0, 0)
        if a_type in (_CODE, _CODE_WITH_SCOPE):
            return op(str(a), str(b))
        if a_type == _REGEX:
            return op(_regex_key(a), _regex_key(b))
        return original(op, a, b, can_compare_types)

    return bson_compare


def _as_number(value: Any) -> decimal.Decimal | float | int:
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    # Ordering comparisons with a Decimal NaN raise in Python; the server ranks NaN below every number.
    if isinstance(value, decimal.Decimal) and value.is_nan():
        return -math.inf
    if isinstance(value, float) and math.isnan(value):
        return -math.inf
    return value


def _regex_key(value: Any) -> tuple[str, int]:
    if isinstance(value, Regex):
        return str(value.pattern), int(value.flags)
    if isinstance(value, re.Pattern):
        return str(value.pattern), int(value.flags)
    return str(value), 0
