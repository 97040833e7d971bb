"""mongodb-dlt: MongoDB collections as Dagster assets, loaded through dlt.

``MongoDltComponent`` is imported on first use, so worker processes that import a submodule (the BSON
converter) do not pay for Dagster's import.
"""

from typing import Any

__all__ = ["MongoDltComponent"]


def __getattr__(name: str) -> Any:
    if name == "MongoDltComponent":
        from mongodb_dlt.component import MongoDltComponent

        return MongoDltComponent
    raise AttributeError(f"module 'mongodb_dlt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
