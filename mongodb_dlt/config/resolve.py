"""Inheritance, as in Sling's replication YAML: top-level ``defaults`` -> database -> collection, and ``load_config``.

The most specific level that gives an option wins (its value replaces the inherited one); only ``tags`` merge.
An option no level gives takes its model field's default. Options that are valid alone but not together are
reported where the most specific of them was given, naming where the others come from. Every problem is
collected before one ConfigError names them all, in line order.

No two collections may share a place (naming.py decides the names): an asset key, a dlt pipeline, a table or a
dlt schema in one dataset; nor may a table be named like another's child tables (``<table>__...``) or like dlt's
own (``_dlt...``); nor may two databases share an op, or one database's dataset be another's staging dataset. The
later of the two is refused, naming the file, line and key of both and the option that moves one of them.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mongodb_dlt.config.document import Document, YamlPath, dotted
from mongodb_dlt.config.env import connection_url_problem
from mongodb_dlt.config.models import (
    TOP_LEVEL_KEYS,
    CollectionConfig,
    CollectionOptions,
    DatabaseConfig,
    DatabaseSection,
    DefaultsSection,
    DestinationConfig,
    ProjectConfig,
    collection_name_problem,
    config_path,
    database_name_problem,
    default_of,
    show_value,
)
from mongodb_dlt.config.rules import option_conflicts
from mongodb_dlt.errors import ConfigError
from mongodb_dlt.naming import (
    CHILD_TABLE_SEPARATOR,
    Place,
    collection_places,
    database_job_name,
    default_dataset,
    default_key_prefix,
    describe_place,
    op_name,
    parent_tables,
    partitioned_op_name,
    reserved_table_problem,
    root_table,
    schedule_name,
    staging_dataset,
    stored_dataset,
)

_SECRET_KEY = re.compile(
    r"(?i)credential|password|passwd|pwd|secret|private_key|token|api_?key|access_key|client_email|keyfile|key_file"
)
_COLLECTION_FIELDS: Final = frozenset(CollectionOptions.model_fields)
_LEVEL_DEFAULTS, _LEVEL_DATABASE, _LEVEL_COLLECTION = 1, 2, 3
_NO_OPTIONS: Final = CollectionOptions()
# The options option_conflicts weighs, as they are when no level gives them (read once: every collection needs them).
_CONFLICT_DEFAULTS: Final = {
    field: default_of(CollectionOptions, field)
    for field in ("write_disposition", "primary_key", "incremental", "projection", "partitions")
}
_MOVE_BY_ASSET_NAME: Final = (
    "set `asset_name` on one of them (it names the asset, the dlt pipeline and schema, and the table unless "
    "`table_name` is set)"
)


def _empty_file(path: Path) -> ConfigError:
    return ConfigError(
        f"the file is empty: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}", path=path
    )


def _split_secrets(value: Any, path: YamlPath) -> tuple[Any, list[YamlPath]]:
    """``value`` without the keys that name credentials, and the paths of those keys."""
    if not isinstance(value, dict):
        return value, []
    kept: dict[str, Any] = {}
    secrets: list[YamlPath] = []
    for key, item in value.items():
        if _SECRET_KEY.search(key):
            secrets.append((*path, key))
        else:
            kept[key], inner = _split_secrets(item, (*path, key))
            secrets.extend(inner)
    return kept, secrets


@dataclass(slots=True, eq=False)
class _Owner:
    """Who holds a place: a collection (or a database, ``collection`` None) and where the YAML gives it."""

    path: YamlPath
    database: str
    collection: str | None = None

    def named(self, other: _Owner) -> str:
        if self.collection is None:
            return f"database {self.database!r}"
        if self.database == other.database:
            return f"collection {self.collection!r}"
        return f"collection {self.collection!r} of database {self.database!r}"


class _Resolver:
    """Turns the document's plain values into a ProjectConfig, recording every problem on the way."""

    def __init__(self, document: Document) -> None:
        self.doc = document
        # Across databases, who holds each place (naming.collection_places) and each op; per dataset, the root
        # tables and every prefix ``<p>`` of one that is followed by ``__`` (a root table there could be p's child).
        self.places: dict[tuple[str, ...], _Owner] = {}
        self.ops: dict[str, _Owner] = {}
        self.datasets: dict[str, _Owner] = {}
        self.stagings: dict[str, _Owner] = {}
        self.roots: dict[tuple[str, str], _Owner] = {}
        self.parents: dict[tuple[str, str], tuple[_Owner, str]] = {}

    def project(self, data: Any) -> ProjectConfig | None:
        doc = self.doc
        if data is None:
            raise _empty_file(doc.path)
        if not isinstance(data, dict):
            doc.problem(
                f"the top level must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, got {show_value(data)}"
            )
            return None
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                doc.problem(f"unknown key {key!r}{hint}; allowed keys: {', '.join(TOP_LEVEL_KEYS)}", (key,))
        destination = self.destination(data.get("destination"))
        dataset_prefix = data.get("dataset_prefix", default_of(ProjectConfig, "dataset_prefix"))
        if dataset_prefix is None:
            dataset_prefix = ""
        if not isinstance(dataset_prefix, str):
            doc.problem(
                f"expected a string, got {doc.shown_input(('dataset_prefix',), dataset_prefix)}",
                ("dataset_prefix",),
            )
        given_defaults = data.get("defaults")
        defaults = doc.validate(
            DefaultsSection, {} if given_defaults is None else given_defaults, ("defaults",)
        )
        databases = self.databases(data, defaults, dataset_prefix if isinstance(dataset_prefix, str) else "")
        if destination is not None and databases is not None:
            self.refuse_duckdb_catalog(destination, databases)
        if doc.problems or destination is None or databases is None:
            return None
        return ProjectConfig(
            path=doc.path, destination=destination, dataset_prefix=dataset_prefix, databases=databases
        )

    def destination(self, value: Any) -> DestinationConfig | None:
        where: YamlPath = ("destination",)
        if value is None:
            value = {}
        if isinstance(value, str):
            value = {"type": value}
        value, secrets = _split_secrets(value, where)
        if secrets:
            kind = value.get("type") if isinstance(value.get("type"), str) else default_of(DestinationConfig, "type")
            for path in secrets:
                field = "project_id" if str(path[-1]).lower().startswith("credential") else str(path[-1])
                env_var = "__".join(["DESTINATION", kind, "CREDENTIALS", field]).upper()
                self.doc.problem(
                    "credentials do not belong in the YAML: give them to dlt as environment variables such "
                    f"as {env_var}, or in .dlt/secrets.toml under [destination.{kind}.credentials]",
                    path,
                )
        return self.doc.validate(DestinationConfig, value, where)

    def databases(
        self, data: dict[str, Any], defaults: DefaultsSection | None, dataset_prefix: str
    ) -> dict[str, DatabaseConfig] | None:
        doc = self.doc
        where: YamlPath = ("databases",)
        if "databases" not in data:
            doc.problem("required key databases is missing: map each MongoDB database to its collections")
            return None
        value = data["databases"]
        if not isinstance(value, dict):
            doc.problem(f"expected a mapping of databases to their collections, got {show_value(value)}", where)
            return None
        if not value:
            doc.problem("lists no databases: map each MongoDB database to its collections", where)
            return None
        databases = {}
        for name, entry in value.items():
            database = self.database(name, entry, defaults, dataset_prefix)
            if database is not None:
                databases[name] = database
        return databases

    def database(
        self, name: str, entry: Any, defaults: DefaultsSection | None, dataset_prefix: str
    ) -> DatabaseConfig | None:
        doc = self.doc
        where: YamlPath = ("databases", name)
        if (problem := database_name_problem(name)) is not None:
            doc.problem(problem, where)
        if isinstance(entry, list):
            listed, listed_at, section = entry, where, DatabaseSection()
        elif isinstance(entry, dict):
            own = {key: item for key, item in entry.items() if key != "collections"}
            section = doc.validate(DatabaseSection, own, where, extra_keys=("collections",))
            listed, listed_at = entry.get("collections"), (*where, "collections")
            if "collections" not in entry:
                doc.problem(
                    f"database {name!r} has no `collections:` (a list or a mapping of collections)", where
                )
                return None
        else:
            doc.problem(
                f"expected the collections of database {name!r}: a list `{name}: [a, b]` or a mapping with "
                f"`collections:`, got {show_value(entry)}",
                where,
            )
            return None
        collections = self.collection_options(name, listed, listed_at)
        if section is None or defaults is None or collections is None:
            return None
        return self.resolve_database(name, defaults, section, collections, dataset_prefix)

    def collection_options(
        self, database: str, listed: Any, where: YamlPath
    ) -> list[tuple[str, YamlPath, CollectionOptions | None]] | None:
        doc = self.doc
        found: list[tuple[str, YamlPath, CollectionOptions | None]] = []
        if isinstance(listed, list) and listed:
            first_line: dict[str, int] = {}
            for index, item in enumerate(listed):
                path = (*where, index)
                if isinstance(item, dict | list) or item is None:
                    doc.problem(f"expected a collection name, got {show_value(item)}", path)
                    continue
                name = item if isinstance(item, str) else doc.plain_text.get(path, str(item))
                line = doc.line(path) or 0
                if name in first_line:
                    lines = (
                        f"line {line}" if first_line[name] == line else f"lines {first_line[name]} and {line}"
                    )
                    doc.problem(f"collection {name!r} is listed twice ({lines})", path)
                    continue
                first_line[name] = line
                found.append((name, path, _NO_OPTIONS))
        elif isinstance(listed, dict) and listed:
            for name, options in listed.items():
                path = (*where, name)
                if options is None or options == {}:
                    found.append((name, path, _NO_OPTIONS))
                elif isinstance(options, dict):
                    found.append((name, path, doc.validate(CollectionOptions, options, path)))
                else:
                    doc.problem(
                        f"expected the options of collection {name!r} as a mapping (or nothing), "
                        f"got {show_value(options)}",
                        path,
                    )
        else:
            doc.problem(f"database {database!r} lists no collections", where)
            return None
        for name, path, _ in found:
            if (problem := collection_name_problem(name)) is not None:
                doc.problem(problem, path)
        return found

    def resolve_database(
        self,
        name: str,
        defaults: DefaultsSection,
        section: DatabaseSection,
        collections: list[tuple[str, YamlPath, CollectionOptions | None]],
        dataset_prefix: str,
    ) -> DatabaseConfig | None:
        doc = self.doc
        where: YamlPath = ("databases", name)
        # Options every collection of this database inherits, and where each one was given.
        inherited: dict[str, Any] = {}
        origins: dict[str, tuple[int, YamlPath]] = {}
        for level, layer, layer_path in (
            (_LEVEL_DEFAULTS, defaults, ("defaults",)),
            (_LEVEL_DATABASE, section, where),
        ):
            for field in layer.model_fields_set:
                value = getattr(layer, field)
                inherited[field] = {**inherited.get("tags", {}), **value} if field == "tags" else value
                origins[field] = (level, (*layer_path, field))
        url_origin = origins.get("connection_url")
        url_path = url_origin[1] if url_origin else None
        connection_url = inherited.get("connection_url", default_of(DefaultsSection, "connection_url"))
        if (problem := connection_url_problem(connection_url)) is not None:
            # Once per place it was given; the built-in default is reported once, under databases.
            note = "" if url_path else " (the built-in default connection_url, for every database without its own)"
            doc.problem(f"{problem}{note}", url_path or ("databases",))
        connection = {
            "connection_url": connection_url,
            "path": doc.path,
            "connection_url_line": doc.line(url_path) if url_path else None,
            "connection_url_key": dotted(url_path) if url_path else None,
        }
        inherited_options = {
            field: value for field, value in inherited.items() if field in _COLLECTION_FIELDS
        }
        dataset = stored_dataset(section.dataset) if section.dataset else default_dataset(dataset_prefix, name)
        key_prefix = section.key_prefix or default_key_prefix(name)
        op = section.op_name or op_name(name)
        self.claim_database(name, section, dataset, op)
        resolved: dict[str, CollectionConfig] = {}
        # the first collection of each partitions definition: those collections share a multi-asset (and an op)
        partitioned: dict[tuple[str, Any], YamlPath] = {}
        for collection_name, path, options in collections:
            if options is None:
                continue
            collection = self.resolve_collection(
                name, collection_name, path, options, inherited_options, origins, connection
            )
            if collection is None:
                continue
            if not self.claim(collection, path, dataset, key_prefix):
                continue
            resolved[collection_name] = collection
            if collection.partitions is not None:
                partitioned.setdefault((collection.partitions.every, collection.partitions.start), path)
        for (every, start), first in partitioned.items():
            self.claim_op(partitioned_op_name(op, every, start), _Owner((*first, "partitions"), name), partitioned=True)
        if len(resolved) != len(collections):
            return None
        return DatabaseConfig(
            name=name,
            connection_url=connection["connection_url"],
            max_parallel_collections=inherited.get(
                "max_parallel_collections", default_of(DefaultsSection, "max_parallel_collections")
            ),
            dataset=dataset,
            key_prefix=key_prefix,
            op_name=op,
            schedule=section.schedule,
            collections=resolved,
            line=doc.line(where),
        )

    def resolve_collection(
        self,
        database: str,
        name: str,
        path: YamlPath,
        options: CollectionOptions,
        inherited: dict[str, Any],
        inherited_origins: dict[str, tuple[int, YamlPath]],
        connection: dict[str, Any],
    ) -> CollectionConfig | None:
        values = dict(inherited)
        origins = inherited_origins
        if options.model_fields_set:
            origins = dict(inherited_origins)
            for field in options.model_fields_set:
                values[field] = getattr(options, field)
                origins[field] = (_LEVEL_COLLECTION, (*path, field))
            if "tags" in options.model_fields_set:
                values["tags"] = {**inherited.get("tags", {}), **options.tags}
        conflicts = option_conflicts(
            values.get("write_disposition", _CONFLICT_DEFAULTS["write_disposition"]),
            values.get("primary_key", _CONFLICT_DEFAULTS["primary_key"]),
            values.get("incremental", _CONFLICT_DEFAULTS["incremental"]),
            values.get("projection", _CONFLICT_DEFAULTS["projection"]),
            values.get("partitions", _CONFLICT_DEFAULTS["partitions"]),
        )
        for fields, problem in conflicts:
            self.conflict(fields, problem, origins, path)
        if conflicts:
            return None
        values.update(connection)
        return self.doc.validate(
            CollectionConfig,
            {"name": name, "database": database, "line": self.doc.line(path), **values},
            path,
        )

    def conflict(
        self,
        fields: tuple[str, ...],
        problem: str,
        origins: dict[str, tuple[int, YamlPath]],
        path: YamlPath,
    ) -> None:
        """Reports at the most specific level setting one of ``fields``, naming where the others come from."""
        given = [field for field in fields if field in origins]
        blamed = max(given, key=lambda field: origins[field][0]) if given else None
        notes = []
        for field in fields:
            if field == blamed:
                continue
            if field in origins:
                other = origins[field][1]
                notes.append(f"{field} comes from {dotted(other)}, line {self.doc.line(other)}")
            else:
                notes.append(f"{field} is the default {_CONFLICT_DEFAULTS[field]!r}")
        where = origins[blamed][1] if blamed else path
        self.doc.problem(f"{problem} ({'; '.join(notes)})" if notes else problem, where)

    def where(self, owner: _Owner) -> str:
        """An owner's place in the file, as a ConfigError names its own."""
        error = self.doc.fail("", owner.path)
        return f"{error.path}, line {error.line}, key {error.key}"

    def refuse(self, this: _Owner, other: _Owner, problem: str, fix: str) -> None:
        """Reports at ``this`` that it and ``other`` collide, naming where both are."""
        line = self.doc.line(other.path)
        self.doc.problem(
            f"{this.named(other)} and {other.named(this)} (line {line}) would both {problem}; {fix}. "
            f"The other is at {self.where(other)}",
            this.path,
        )

    def claim_database(self, name: str, section: DatabaseSection, dataset: str, op: str) -> None:
        """Refuses a database whose op (and jobs and schedule) another has, or whose dataset is where dlt stages
        another's merge loads (dlt empties it after each load)."""
        where: YamlPath = ("databases", name)
        # each named where the YAML gives the name, or at the database when the name is its default
        self.claim_op(op, _Owner((*where, "op_name") if section.op_name else where, name))
        this = _Owner((*where, "dataset") if section.dataset else where, name)
        staging = staging_dataset(dataset)
        for own, stager, shared in (
            (self.datasets.get(staging), this, staging),
            (this, self.stagings.get(dataset), dataset),
        ):
            if own is not None and stager is not None:
                self.refuse(
                    this,
                    stager if own is this else own,
                    f"use dataset {shared}: {own.named(stager)} as its own, {stager.named(own)} to stage its merge "
                    "loads in (dlt stages them in <dataset>_staging and empties it after each load)",
                    "set `dataset` on one of them",
                )
        self.datasets.setdefault(dataset, this)
        self.stagings.setdefault(staging, this)

    def refuse_duckdb_catalog(self, destination: DestinationConfig, databases: dict[str, DatabaseConfig]) -> None:
        """DuckDB names a file's catalog after the file (``bench.duckdb`` is ``bench``): a dataset (or the staging
        dataset of one) of that name makes every two-part name in it ambiguous, and each load fails."""
        if destination.type != "duckdb" or not destination.path or destination.path.startswith(":"):
            return
        catalog = Path(destination.path).stem.lower()
        for database in databases.values():
            for dataset in (database.dataset, staging_dataset(database.dataset)):
                if dataset.lower() == catalog:
                    self.doc.problem(
                        f"dataset {dataset} has the name DuckDB gives the file {destination.path} (its catalog "
                        f"{catalog}): DuckDB cannot tell them apart and every load would fail ('Ambiguous reference "
                        "to catalog or schema'); set `dataset` on the database, or name the DuckDB file otherwise",
                        ("databases", database.name),
                    )

    def claim_op(self, op: str, this: _Owner, partitioned: bool = False) -> None:
        """Refuses an op another database has: its own (and its jobs and schedule), or the op of its collections
        partitioned alike (naming.partitioned_op_name)."""
        other = self.ops.setdefault(op, this)
        if other is this:
            return
        if partitioned:
            self.refuse(this, other, f"get op {op}", "set `op_name` on one of the databases")
            return
        names = f"op {op} (jobs and schedules {database_job_name(op)}, {schedule_name(op)})"
        self.refuse(this, other, f"get {names}", "set `op_name` on one of them")

    def claim(
        self, collection: CollectionConfig, path: YamlPath, dataset: str, key_prefix: tuple[str, ...]
    ) -> bool:
        """Takes the collection's places, or reports (naming both) each collection that has one of them."""
        this = _Owner(path, collection.database, collection.name)
        table = root_table(collection.table_name)
        if (problem := reserved_table_problem(table)) is not None:
            self.doc.problem(f"{problem}; set `table_name` to another name", path)
            return False
        places = collection_places(collection.database, dataset, key_prefix, collection.asset_name, table)
        shared: dict[int, tuple[_Owner, list[Place]]] = {}
        for place in places:
            other = self.places.get(place)
            if other is not None:
                shared.setdefault(id(other), (other, []))[1].append(place)
        for other, common in shared.values():
            self.refuse(this, other, _listed([describe_place(p) for p in common]), _fix(this, other, common))
        clean = not shared and self.child_tables_apart(this, dataset, table)
        if clean:
            for place in places:
                self.places[place] = this
            self.roots[(dataset, table)] = this
            for parent in parent_tables(table):
                self.parents.setdefault((dataset, parent), (this, table))
        return clean

    def child_tables_apart(self, this: _Owner, dataset: str, table: str) -> bool:
        """False (and reported) when the root table is named like another collection's child tables
        (``<its table>__...``), or another's root table like one of its own."""
        clashes: list[tuple[_Owner, str, _Owner, str]] = []  # (parent, its table, child, its table)
        for parent in parent_tables(table):
            owner = self.roots.get((dataset, parent))
            if owner is not None:
                clashes.append((owner, parent, this, table))
        if (held := self.parents.get((dataset, table))) is not None:
            clashes.append((this, table, *held))
        for parent, parent_table, child, child_table in clashes:
            other = child if parent is this else parent
            separator = CHILD_TABLE_SEPARATOR
            self.refuse(
                this,
                other,
                f"write to table {dataset}.{child_table}: {child.named(parent)} as its own, {parent.named(child)} "
                f"as the child table of an array field `{child_table.removeprefix(parent_table + separator)}` "
                f"(arrays of a collection land in <its table>{separator}<field>)",
                f"set `table_name` on one of them, so that neither table's name is the other's followed by {separator}",
            )
        return not clashes


def _listed(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _fix(this: _Owner, other: _Owner, common: Sequence[Place]) -> str:
    """The YAML options that give one of two collections places of its own."""
    kinds = {place[0] for place in common}
    if this.database == other.database:
        return "set `table_name` on one of them" if kinds == {"table"} else _MOVE_BY_ASSET_NAME
    fixes = []
    if kinds & {"table", "schema"}:
        fixes.append("set `dataset` on one of the databases")
    if "asset" in kinds:
        fixes.append("give the databases different `key_prefix` values")
    if "pipeline" in kinds:
        fixes.append("set `asset_name` on one of the collections")
    return _listed(fixes)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    # A large YAML becomes tens of thousands of short-lived, acyclic objects; meanwhile the cyclic collector
    # would rescan every live object of the process (Dagster's and dlt's included) again and again.
    # Measured on 100 databases x 50 collections: 0.18 s paused, 0.40 s not.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_config(path: str | os.PathLike[str] | None = None, *, section: Sequence[str] = ()) -> ProjectConfig:
    """The YAML at ``path`` (default ``config_path()``) validated and resolved; problems raise ConfigError.
    ``section`` names the key path of the config inside the file (``("attributes",)`` in a component's
    defs.yaml); errors still name the file's own lines and keys."""
    path = Path(path) if path is not None else config_path()
    document = Document(path, tuple(section))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"file not found (working directory {Path.cwd()})", path=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the file: {error}", path=path) from None
    with _cyclic_gc_paused():
        data = document.load(text)
        project = _Resolver(document).project(data)
    if document.problems or project is None:
        problems = sorted(document.problems, key=lambda error: error.line or 0)
        raise ConfigError.collect(problems)
    return project
