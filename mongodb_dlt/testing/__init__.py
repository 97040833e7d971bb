"""A MongoDB stand-in for the demo and the tests: a wire-protocol server backed by mongomock, with
fault injection, a log of the commands it received, and a deterministic sample data set.

The product code must never special-case it: to pymongo it is just a server at ``MongoStandIn.uri``.
Importing this package changes nothing in mongomock; creating a ``MongoStandIn`` teaches it the BSON
comparison order (``patch_mongomock_bson_ordering``, also callable on its own for a bare mongomock client).
Needs the ``demo`` extra: ``pip install 'mongodb-dlt[demo]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `python -m mongodb_dlt.testing` (which imports this package first) can say what to
# install when the demo extra is missing, as `mongodb-dlt demo` does.
_EXPORTS = {
    "SAMPLE_COLLECTIONS": "sample_data",
    "MongoStandIn": "server",
    "patch_mongomock_bson_ordering": "mongomock_compat",
    "populate_sample_data": "sample_data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
