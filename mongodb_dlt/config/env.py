"""``${VAR}`` and ``${VAR:-default}`` in the YAML's strings: resolved while the YAML loads, except in
``connection_url``, which stays raw until a run needs it (``resolve_connection_url``), so definitions load
without the variable and the secret never sits in a config object or an error message. ``$${`` is a literal
``${``; ``${VAR:-default}`` takes the default when VAR is unset or empty, as the shell does.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from mongodb_dlt.errors import ConfigError

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
    return resolved


def _connection_url_error(collection: CollectionConfig, problem: str) -> ConfigError:
    """``problem`` at the place the YAML gave the collection's connection_url (or the built-in default's key)."""
    return ConfigError(
        problem,
        path=collection.path,
        line=collection.connection_url_line,
        key=collection.connection_url_key or "defaults.connection_url",
    )
