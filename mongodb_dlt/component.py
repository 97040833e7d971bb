"""``mongodb_dlt.MongoDltComponent``: the same YAML, as a Dagster component in a ``dg`` project.

``dg scaffold defs mongodb_dlt.MongoDltComponent mongo_ingest`` writes a ``defs.yaml`` whose ``attributes`` are
our YAML schema inline (``defaults``, ``destination``, ``dataset_prefix``, ``databases``), or name a databases.yaml
with ``config_path`` (relative to the defs.yaml). Either way config/ validates it, so errors name the file, line
and key the user wrote, and ``dg check defs`` shows them. Several components (clusters, destinations) merge into
one code location: each binds its loader under a resource key of its own, names its all-collections job after its
folder, and leaves the executor to the project.

A problem in the YAML reaches ``dg check defs``, ``dagster dev`` and the UI as dg shows a schema error in a
defs.yaml: ``file:line - key problem`` above the lines around it, a caret at the key, for each problem.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
from dagster.components import Scaffolder, ScaffoldRequest, scaffold_with
from dagster.components.core.component_tree import ComponentTreeException
from dagster_shared.yaml_utils.source_position import LineCol, SourcePosition, SourcePositionTree
from pydantic import Field

from mongodb_dlt.config import ConfigError, ProjectConfig, load_config
from mongodb_dlt.config.models import TOP_LEVEL_KEYS
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.errors import mask_secrets
from mongodb_dlt.naming import MongoDltTranslator, component_job_name, component_resource_key, component_slug

DEFS_FILE = "defs.yaml"
COMPONENT_TYPE = "mongodb_dlt.MongoDltComponent"
SCAFFOLDED_ATTRIBUTES = """\
# One asset per collection, one multi-asset per database. The keys below are those of databases.yaml
# (see the mongodb-dlt README); `config_path: databases.yaml` instead reads them from a file beside this one.
defaults:
  connection_url: ${MONGODB_URI}
destination:
  type: duckdb
  path: data/warehouse.duckdb   # relative to the project root
databases:
  sample_mflix: [movies, comments]
"""


class ComponentConfigError(ComponentTreeException):
    """The problems of a component's YAML, each as dg shows a defs.yaml schema error (``show_problem``).

    A ComponentTreeException because Dagster shows one of those as it is, where it wraps any other error in one,
    under the component tree and two stack traces that bury the message."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__("\n".join(show_problem(problem) for problem in error.errors))


def show_problem(error: ConfigError) -> str:
    """``file:line - <component type> key problem`` and the lines around it, a caret at the key: the frame
    ``dg check yaml`` draws (with Dagster's own renderer), secrets in those lines masked."""
    head = f"{error.path}:{error.line}" if error.line is not None else str(error.path)
    title = f"{head} - {COMPONENT_TYPE} {error.key + ' ' if error.key else ''}{error.problem}"
    if error.path is None or error.line is None:
        return title
    try:
        lines = error.path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return title
    text = lines[error.line - 1] if error.line <= len(lines) else ""
    name = (error.key or "").rpartition(".")[2].partition("[")[0]
    column = text.find(name) if name and name in text else len(text) - len(text.lstrip())
    where = SourcePosition(str(error.path), LineCol(error.line, column + 1), LineCol(error.line, column + 1))
    frame = SourcePositionTree(where, {}).source_error([], error.problem, value_error=False)
    return mask_secrets(f"{title}\n{frame.snippet}")


class MongoDltScaffolder(Scaffolder):
    """Writes a defs.yaml with a working example: one database of two collections into DuckDB."""

    def scaffold(self, request: ScaffoldRequest) -> None:
        request.target_path.mkdir(parents=True, exist_ok=True)
        attributes = textwrap.indent(SCAFFOLDED_ATTRIBUTES, "  ")
        (request.target_path / DEFS_FILE).write_text(f"type: {request.type_name}\n\nattributes:\n{attributes}")


@scaffold_with(MongoDltScaffolder)
class MongoDltComponent(dg.Component, dg.Resolvable, dg.Model):
    """Loads MongoDB collections into a warehouse (DuckDB, BigQuery, any dlt destination) through dlt: one
    multi-asset per database, one asset per collection, with asset checks. Attributes are mongodb-dlt's YAML."""

    config_path: str | None = Field(
        default=None, description="a databases.yaml to read instead of the keys below, relative to this defs.yaml"
    )
    defaults: dict[str, Any] | None = Field(default=None, description="options every database and collection inherits")
    destination: dict[str, Any] | str | None = Field(default=None, description="where every database lands")
    dataset_prefix: str | None = Field(default=None, description="datasets are <prefix>_<database>")
    databases: dict[str, Any] | None = Field(default=None, description="MongoDB databases and their collections")

    def project_config(self, context: dg.ComponentLoadContext) -> ProjectConfig:
        """The validated config: from ``config_path``, or from this component's own defs.yaml attributes."""
        inline = [name for name in TOP_LEVEL_KEYS if getattr(self, name)]
        defs_file = context.path / DEFS_FILE
        if self.config_path:
            if inline:
                tree = context.resolution_context.source_position_tree
                where = tree.lookup(["attributes", "config_path"]) if tree else None
                raise ConfigError(
                    f"config_path and {', '.join(inline)} exclude each other: give the databases in one place",
                    path=defs_file,
                    line=where.start.line if where else None,
                    key="attributes.config_path",
                )
            return load_config(context.path / self.config_path)
        return load_config(defs_file, section=("attributes",))

    def get_translator(self) -> MongoDltTranslator:
        """Names this component's assets. To name them your way, subclass the component in your project, return
        your ``MongoDltTranslator`` subclass here, and use your component's type in defs.yaml."""
        return MongoDltTranslator()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            config = self.project_config(context)
        except ConfigError as error:
            raise ComponentConfigError(error) from None
        slug = component_slug(context.path.relative_to(context.defs_module_path).parts)
        return build_definitions(
            config,
            resource_key=component_resource_key(slug),
            all_collections_job=component_job_name(slug),
            base=Path(context.project_root),
            executor=False,
            translator=self.get_translator(),
        )
