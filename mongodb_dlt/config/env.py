"""``${VAR}`` and ``${VAR:-default}`` in the YAML's strings: resolved while the YAML loads, except in
``connection_url``, which stays raw until a run needs it (``resolve_connection_url``), so definitions load
without the variable and the secret never sits in a config object or an error message. ``$${`` is a literal
``${``; ``${VAR:-default}`` takes the default when VAR is unset or empty, as the shell does. A connection URL whose
variables are set is parsed as pymongo parses it (``connection_url_problem``), when the YAML loads and again when a
run resolves it, so a URL pymongo would refuse is named where it was written instead of failing the run.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

import pymongo.errors
from pymongo.uri_parser_shared import _validate_uri

from mongodb_dlt.errors import ConfigError, mask_secrets

if TYPE_CHECKING:
    from mongodb_dlt.config.models import CollectionConfig

_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{")


def interpolate(value: str) -> tuple[str, list[str], bool]:
    """``value`` with its variables resolved: the text, the variables that are not set, whether one is malformed."""
    missing: list[str] = []
    malformed = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal malformed
        if match.group(0) == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            malformed = True
            return match.group(0)
        found = os.environ.get(name)
        if found is None or (found == "" and match.group("default") is not None):
            if match.group("default") is not None:
                return match.group("default")
            missing.append(name)
            return ""
        return found

    return _ENV_REFERENCE.sub(substitute, value), missing, malformed


def interpolation_problem(value: str, missing: list[str], malformed: bool) -> str:
    """What is wrong with the variables of ``value``, as ``interpolate`` found them."""
    if malformed:
        return f"malformed variable reference in {value!r}: write ${{NAME}} or ${{NAME:-default}}"
    names = ", ".join(missing)
    return f"environment variable {names} is not set (give a default with ${{{missing[0]}:-...}} or set it)"


def connection_url_problem(value: str) -> str | None:
    """What pymongo would refuse in the connection URL ``value`` (as the YAML wrote it, ``${VAR}`` included) once
    its variables are resolved, or None: also None while a variable is unset, a problem reported on its own.

    ``_validate_uri`` is the check ``MongoClient`` itself runs on its URL, called as it calls it (an unknown option
    warns, as it does there); the DNS lookup of a mongodb+srv:// name comes later in ``MongoClient`` and belongs to
    the run: validating must not depend on DNS."""
    resolved, missing, malformed = interpolate(value)
    if missing or malformed or not resolved.strip():
        return None
    try:
        _validate_uri(resolved, validate=True, warn=True, normalize=False)
    except (pymongo.errors.ConfigurationError, ValueError) as error:  # InvalidURI is one; a bad port is a ValueError
        names = list(dict.fromkeys(match["name"] for match in _ENV_REFERENCE.finditer(value) if match["name"]))
        origin = f" (from environment variable{'s' if len(names) > 1 else ''} {', '.join(names)})" if names else ""
        return (
            f"{_without_password(resolved)!r}{origin} is not a MongoDB connection URL: "
            f"{_hide_password(str(error), resolved)}"
        )
    return None


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``url`` is, as pymongo splits it: after the first ``:`` of what precedes the last
    ``@`` of the part before any ``?``."""
    start = url.find("://") + 3 if "://" in url else 0
    at = url.rfind("@", start, len(url.partition("?")[0]))
    colon = url.find(":", start, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 and at > colon + 1 else None


def _without_password(url: str) -> str:
    span = _userinfo_span(url)
    return mask_secrets(f"{url[:span[0]]}****{url[span[1]:]}" if span else url)


def _hide_password(text: str, url: str) -> str:
    """``text`` without the password of ``url``: pymongo's messages may quote the user:password part, or the part
    of it after an unescaped ``/`` (as a database name), where ``mask_secrets`` cannot see it."""
    span = _userinfo_span(url)
    if span:
        password = url[span[0]:span[1]]
        pieces = {password, unquote_plus(password), *password.split("/")}
        for written in sorted(pieces - {""}, key=len, reverse=True):
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(written)}(?![A-Za-z0-9])", "****", text)
    return mask_secrets(text)


def resolve_env(value: str, *, where: str = "") -> str:
    """``value`` with ``${VAR}`` and ``${VAR:-default}`` resolved; an unset variable is a ConfigError."""
    resolved, missing, malformed = interpolate(value)
    if missing or malformed:
        raise ConfigError(interpolation_problem(value, missing, malformed), key=where or None)
    return resolved


def resolve_connection_url(collection: CollectionConfig) -> str:
    """The collection's connection URL with its variables resolved, at run time only."""
    resolved, missing, malformed = interpolate(collection.connection_url)
    if missing or malformed:
        problem = interpolation_problem(collection.connection_url, missing, malformed)
        origin = "" if collection.connection_url_line is not None else " (the built-in default)"
        raise _connection_url_error(
            collection,
            f"{problem}; it is the connection_url{origin} of database {collection.database!r}, needed to "
            f"load collection {collection.name!r}",
        )
    if not resolved.strip():
        raise _connection_url_error(
            collection,
            f"connection_url of database {collection.database!r} is empty once resolved "
            f"(needed to load collection {collection.name!r})",
        )
    if (problem := connection_url_problem(collection.connection_url)) is not None:
        raise _connection_url_error(
            collection,
            f"{problem}; it is the connection_url of database {collection.database!r}, needed to load collection "
            f"{collection.name!r}",
        )
    return resolved


def _connection_url_error(collection: CollectionConfig, problem: str) -> ConfigError:
    """``problem`` at the place the YAML gave the collection's connection_url (or the built-in default's key)."""
    return ConfigError(
        problem,
        path=collection.path,
        line=collection.connection_url_line,
        key=collection.connection_url_key or "defaults.connection_url",
    )
