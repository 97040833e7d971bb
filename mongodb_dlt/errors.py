"""Every exception we raise, which errors a retry can cure, and the masking that keeps secrets out of messages.

Messages are written for the person who has to act on them: what is wrong, where (file, line, key, collection),
and what to do. No message, log line or metadata value ever holds a password: ``mask_secrets`` runs over
anything that may contain a connection URL.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymongo.errors

_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?!\$\{[^}\s]*\}@)(?P<password>[^\s/?#]+)@"
)
_PASSWORD_PARAMETER = re.compile(r"(?i)(?P<head>\b\w*(?:password|passwd|pwd)=)(?P<password>[^&;\s'\"]+)")

# Errors a retry with backoff can cure: the server or the network had a moment, or a cursor timed out.
# AutoReconnect covers ConnectionFailure's transient children (NetworkTimeout, ServerSelectionTimeoutError).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    pymongo.errors.AutoReconnect,
    pymongo.errors.CursorNotFound,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WaitQueueTimeoutError,
)
# A full disk (or quota) says so by errno from Python's own writes, and only in its text from DuckDB's.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` and ``password=``/``pwd=`` value
    replaced by ``****``."""
    text = _URL_PASSWORD.sub(r"\g<head>****@", text)
    return _PASSWORD_PARAMETER.sub(r"\g<head>****", text)


def mask_url(url: str) -> str:
    """``url`` (mongodb://, mongodb+srv:// or any scheme) safe to log: its password replaced by ``****``."""
    return mask_secrets(url)


class ConfigError(Exception):
    """A problem in the YAML: ``str()`` is ``<file>, line <n>, key <dotted.key>: <problem>``.

    When several problems were found at once, ``errors`` holds each of them and ``str()`` lists one per line;
    the attributes of the error itself are those of the first problem.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        key: str | None = None,
        errors: Sequence[ConfigError] = (),
    ) -> None:
        self.problem = mask_secrets(problem)
        self.path = Path(path) if path is not None else None
        self.line = line
        self.key = key
        self.errors: list[ConfigError] = list(errors) or [self]
        super().__init__(str(self))

    @classmethod
    def collect(cls, errors: Sequence[ConfigError]) -> ConfigError:
        first = errors[0]
        if len(errors) == 1:
            return first
        return cls(first.problem, path=first.path, line=first.line, key=first.key, errors=errors)

    def _one_line(self) -> str:
        where = [str(self.path)] if self.path is not None else []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.key:
            where.append(f"key {self.key}")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem

    def __str__(self) -> str:
        return "\n".join(error._one_line() for error in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays args only; keep path/line/key/errors across processes.
        return (self.__class__, (self.problem,), self.__dict__)


class MongoUnreachableError(Exception):
    """The server of a connection URL cannot be used at all (refused, unknown host, timed out, bad URL, failed
    authentication). ``str()`` is one line, password masked: ``cannot reach MongoDB at <url>: <cause>``, with
    ``(after N s)`` when it waited for a server."""


class DocumentConversionError(ValueError):
    """A document MongoDB returned that we could not convert (a string that is not UTF-8, a key it repeats); the
    message names its ``_id`` and the field (a repeated key by its dotted path)."""


class CollectionBusyError(Exception):
    """Another live process is loading the same collection into the same destination."""


class DestinationLockedError(Exception):
    """The DuckDB file stayed locked by another process for longer than ``destination.lock_timeout``."""


class DestinationNotWritableError(Exception):
    """The DuckDB file cannot be opened for writing for a reason waiting would not cure."""


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every error it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def disk_full(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain that says a disk (or a quota) is full, innermost first; None when none does."""
    for current in reversed(_chain(error)):
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return current
        if _DISK_FULL_TEXT.search(str(current)):
            return current
    return None


def is_transient(error: BaseException) -> bool:
    """True when ``error`` or anything in its cause chain is a transient MongoDB error, and no disk is full: a
    retry cannot free space, however the error that met the full disk was wrapped."""
    chain = _chain(error)
    return any(isinstance(current, TRANSIENT_ERRORS) for current in chain) and disk_full(error) is None


def describe_error(error: BaseException) -> str:
    """The innermost meaningful message of a (dlt-wrapped) error, secrets masked: a full disk is named as such,
    and a failed schema update by its cause, without dlt's guess that parallel pipelines collided."""
    full = disk_full(error)
    if full is not None:
        return mask_secrets(f"disk full: {type(full).__name__}: {full}")
    root = error
    # dlt wraps a step's error in PipelineStepFailed (matched by name: the converter's worker processes import this
    # module, and must not pay for importing dlt)
    while _is_a(root, "PipelineStepFailed") and root.__cause__ is not None:
        root = root.__cause__
    if _is_a(root, "ResourceExtractionError") and root.__cause__ is not None:
        root = root.__cause__
    if _is_a(root, "SchemaUpdateError"):
        return mask_secrets(_schema_update(root))
    return mask_secrets(f"{type(root).__name__}: {root}")


def _schema_update(error: BaseException) -> str:
    """dlt's SchemaUpdateError without its closing advice, which guesses that pipelines loading into one dataset
    at once collided and calls a retry safe whatever the cause (a full disk, a table two sources write, a missing
    permission); our DuckDB loads never write at once (destination.py), and the cause speaks for itself."""
    tables: list[str] = getattr(error, "table_names", [])
    dataset = "staging dataset" if getattr(error, "staging_dataset", False) else "dataset"
    what = f"update tables {', '.join(tables)} in the {dataset}" if tables else f"create the {dataset}"
    cause: BaseException | None = getattr(error, "cause", None) or error.__cause__
    # dlt's DatabaseException only wraps the database's own error
    inner = getattr(cause, "dbapi_exception", None) or cause
    shown = f"{type(inner).__name__}: {inner}" if inner is not None else str(error)
    return f"dlt could not {what} of schema {getattr(error, 'schema_name', '?')}: {shown}"


def _is_a(error: BaseException, class_name: str) -> bool:
    return any(cls.__name__ == class_name for cls in type(error).__mro__)
