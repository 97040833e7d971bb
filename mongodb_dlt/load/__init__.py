"""Loading into the warehouse: the destination built once from the YAML (``destination.py``, DuckDB specifics
included), every SQL statement of ours (``warehouse.py``), one writer per collection (``locking.py``) and the
Dagster resource running one dlt pipeline per collection (``loader.py``, ``MongoDltLoader``)."""

from mongodb_dlt.load.loader import MongoDltLoader

__all__ = ["MongoDltLoader"]
