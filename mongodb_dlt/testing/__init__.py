"""A MongoDB stand-in for the demo and the tests: a wire-protocol server backed by mongomock, with
fault injection, a log of the commands it received, and a deterministic sample data set.

The product code must never special-case it: to pymongo it is just a server at ``MongoStandIn.uri``.
Importing this package changes nothing in mongomock; creating a ``MongoStandIn`` teaches it the BSON
comparison order (``patch_mongomock_bson_ordering``, also callable on its own for a bare mongomock client).
Needs the ``demo`` extra: ``pip install 'mongodb-dlt[demo]'``.
"""

from mongodb_dlt.testing.mongomock_compat import patch_mongomock_bson_ordering
from mongodb_dlt.testing.sample_data import SAMPLE_COLLECTIONS, populate_sample_data
from mongodb_dlt.testing.server import MongoStandIn

__all__ = ["SAMPLE_COLLECTIONS", "MongoStandIn", "patch_mongomock_bson_ordering", "populate_sample_data"]
