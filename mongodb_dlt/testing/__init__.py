"""A MongoDB stand-in for the demo and the tests: a wire-protocol server backed by mongomock, with
fault injection, a log of the commands it received, and a deterministic sample data set.

The product code must never special-case it: to pymongo it is just a server at ``MongoStandIn.uri``.
"""

from mongodb_dlt.testing.sample_data import SAMPLE_COLLECTIONS, populate_sample_data
from mongodb_dlt.testing.server import MongoStandIn

__all__ = ["SAMPLE_COLLECTIONS", "MongoStandIn", "populate_sample_data"]
