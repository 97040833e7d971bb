"""Raw BSON -> the Python documents the converter's Python walk takes: bson's C decoder, and what it would not keep
looked for in the raw bytes first. bson keeps only the last value of a repeated key (MongoDB can store a document
that repeats one) and decodes a Symbol as a plain String; here a document that repeats a key fails, naming the key,
and a document holding a Symbol is decoded element by element so that the Symbol stays one. ``inspect_batch`` has a
C twin, ``_fastwalk.inspect``, held equal by mongodb_dlt_tests/unit/test_fastwalk.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bson
from bson.code import Code

from mongodb_dlt.errors import DocumentConversionError
from mongodb_dlt.extract.bson_types import CODEC_OPTIONS, FieldPath, Symbol

try:
    from mongodb_dlt.extract import _fastwalk
except ImportError:  # built without a C compiler
    _fastwalk = None


def decode_batch(raw: bytes) -> list[dict[str, Any]]:
    """The documents of a batch as the Python walk takes them: bson's decoder, except that a document repeating
    a key fails (bson would keep its last value only) and a document holding a Symbol is decoded by
    ``decode_keeping_symbols`` (bson would make it a plain string)."""
    documents = bson.decode_all(raw, CODEC_OPTIONS)  # first: malformed BSON raises bson's own error
    repeated, with_symbols = _fastwalk.inspect(raw) if _fastwalk is not None else inspect_batch(raw)
    if repeated is not None:
        number, path = repeated
        raise DocumentConversionError(
            f"the key {'.'.join(path)!r} appears more than once in one document (number {number} of its batch): "
            "MongoDB keeps each of its values, a row can hold only one"
        )
    if with_symbols:
        starts = _document_starts(raw)
        for number in with_symbols:
            documents[number] = decode_keeping_symbols(raw, starts[number])
    return documents


def inspect_batch(raw: bytes) -> tuple[tuple[int, FieldPath] | None, list[int]]:
    """What bson's decoder would not keep, in the well-formed documents of ``raw``: the first repeated key (the
    document's number and the key's path, array positions included; a (sub-)document's own keys before those of
    its children, the first repeated key in key order) or None, and the numbers of the documents holding a
    Symbol. ``_fastwalk.inspect`` is the same in C."""
    repeated: tuple[int, FieldPath] | None = None
    with_symbols = []
    for number, start in enumerate(_document_starts(raw)):
        found: list[FieldPath] = []
        if _inspect_document(raw, start, (), False, found):
            with_symbols.append(number)
        if found and repeated is None:
            repeated = (number, found[0])
    return repeated, with_symbols


def _document_starts(raw: bytes) -> list[int]:
    starts = []
    offset = 0
    while offset < len(raw):
        starts.append(offset)
        offset += int.from_bytes(raw[offset : offset + 4], "little")
    return starts


def _inspect_document(data: bytes, start: int, path: FieldPath, is_array: bool, found: list[FieldPath]) -> bool:
    """Whether the (sub-)document at ``data[start:]`` holds a Symbol at any depth; appends to ``found`` the path of
    its first repeated key (an array's keys are positions, decoded in order whatever they are: not checked)."""
    spans = list(element_spans(data, start))
    if not is_array and not found:
        counts: dict[str, int] = {}
        for _, key, _, _, _ in spans:
            counts[key] = counts.get(key, 0) + 1
        repeated = next((key for key, count in counts.items() if count > 1), None)
        if repeated is not None:
            found.append((*path, repeated))
    symbol = False
    for element_type, key, _, value_start, _ in spans:
        if element_type == 0x0E:
            symbol = True
        elif element_type in (0x03, 0x04):
            symbol |= _inspect_document(data, value_start, (*path, key), element_type == 0x04, found)
        elif element_type == 0x0F:
            symbol |= _inspect_document(data, _scope_start(data, value_start), (*path, key, "$scope"), False, found)
    return symbol


def _holds_symbol(data: bytes, start: int) -> bool:
    return _inspect_document(data, start, (), True, [])


def _scope_start(data: bytes, value_start: int) -> int:
    """Where the scope document of a code-with-scope value starts: after its int32 total and its code string."""
    return value_start + 8 + int.from_bytes(data[value_start + 4 : value_start + 8], "little")


def decode_keeping_symbols(data: bytes, start: int, is_array: bool = False) -> Any:
    """The (sub-)document at ``data[start:]`` as bson decodes it, except that a Symbol becomes a ``Symbol``."""
    values: list[tuple[str, Any]] = []  # an array's elements in order, whatever their keys
    for element_type, key, element_start, value_start, end in element_spans(data, start):
        if element_type == 0x0E:
            value: Any = Symbol(data[value_start + 4 : end - 1].decode("utf-8"))
        elif element_type in (0x03, 0x04) and _holds_symbol(data, value_start):
            value = decode_keeping_symbols(data, value_start, element_type == 0x04)
        elif element_type == 0x0F and _holds_symbol(data, _scope_start(data, value_start)):
            scope = _scope_start(data, value_start)
            value = Code(data[value_start + 8 : scope - 1].decode("utf-8"), decode_keeping_symbols(data, scope))
        else:  # the element alone, through bson's decoder (DBRefs, dates, binaries as everywhere else)
            element = data[element_start:end]
            value = bson.decode((len(element) + 5).to_bytes(4, "little") + element + b"\x00", CODEC_OPTIONS)[key]
        values.append((key, value))
    return [value for _, value in values] if is_array else dict(values)


# Size of a BSON element's value by type byte, where it is fixed.
_FIXED_SIZES = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16,
                0x7F: 0, 0xFF: 0}


def element_spans(data: bytes, start: int) -> Iterator[tuple[int, str, int, int, int]]:
    """The elements of the (sub-)document at ``data[start:]``, each as ``(type, key, element start, value start,
    end)``; stops at anything malformed (bson's decoder names that)."""
    offset, end = start + 4, start + int.from_bytes(data[start : start + 4], "little") - 1
    while offset < end:
        element_start = offset
        element_type = data[offset]
        name_end = data.index(b"\x00", offset + 1)
        key = data[offset + 1 : name_end].decode("utf-8", "replace")
        offset = value_start = name_end + 1
        if element_type in _FIXED_SIZES:
            offset += _FIXED_SIZES[element_type]
        elif element_type in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes
            offset += 4 + int.from_bytes(data[offset : offset + 4], "little")
        elif element_type in (0x03, 0x04, 0x0F):  # document, array, code with scope: int32 total length
            offset += int.from_bytes(data[offset : offset + 4], "little")
        elif element_type == 0x05:  # binary: int32 length, subtype, bytes
            offset += 5 + int.from_bytes(data[offset : offset + 4], "little")
        elif element_type == 0x0B:  # regex: two cstrings
            offset = data.index(b"\x00", data.index(b"\x00", offset) + 1) + 1
        elif element_type == 0x0C:  # DBPointer: string + 12 bytes
            offset += 4 + int.from_bytes(data[offset : offset + 4], "little") + 12
        else:
            return
        if offset > end:
            return
        yield element_type, key, element_start, value_start, offset
