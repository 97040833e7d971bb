"""Reading MongoDB: the dlt source (``mongodb_collection``, ``mongodb``) and everything it uses.

- ``source.py``: the dlt resource and source, taking one ``CollectionOptions``;
- ``mongo.py``: connect, ping, the query and projection sent, raw BSON batches, counts;
- ``cursor.py``: the incremental cursor, the only owner of its state layout;
- ``bson_types.py`` (the type table), ``bson_arrow.py`` (the walk) and ``_fastwalk.c`` (its common case in C):
  raw BSON to Arrow columns; ``columns.py`` names them; ``assembler.py`` makes dlt items of them;
- ``workers.py``: converting in worker processes.

The source is imported on first use, so worker processes that import the converter do not pay for dlt's import.
"""

from typing import Any

__all__ = ["mongodb", "mongodb_collection"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mongodb_dlt.extract import source

        return getattr(source, name)
    raise AttributeError(f"module 'mongodb_dlt.extract' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
