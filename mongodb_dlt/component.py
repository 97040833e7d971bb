"""``mongodb_dlt.MongoDltComponent``: the same YAML, as a Dagster component in a ``dg`` project.

``dg scaffold defs mongodb_dlt.MongoDltComponent mongo_ingest`` writes a ``defs.yaml`` whose ``attributes`` are
our YAML schema inline (``defaults``, ``destination``, ``dataset_prefix``, ``databases``), or name a databases.yaml
with ``config_path`` (relative to the defs.yaml). Either way config/ validates it, so errors name the file, line
and key the user wrote, and ``dg check defs`` shows them. Several components (clusters, destinations) merge into
one code location: each binds its loader under a resource key of its own, names its all-collections job after its
folder, and leaves the executor to the project.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
from dagster.components import Scaffolder, ScaffoldRequest, scaffold_with
from pydantic import Field

from mongodb_dlt.config import ProjectConfig, load_config
from mongodb_dlt.config.models import TOP_LEVEL_KEYS
from mongodb_dlt.definitions import build_definitions
from mongodb_dlt.naming import MongoDltTranslator, component_job_name, component_resource_key, component_slug

DEFS_FILE = "defs.yaml"
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
                raise dg.DagsterInvalidDefinitionError(
                    f"{defs_file}: attributes config_path and {', '.join(inline)} exclude each other: "
                    "give the databases in one place"
                )
            return load_config(context.path / self.config_path)
        return load_config(defs_file, section=("attributes",))

    def get_translator(self) -> MongoDltTranslator:
        """Names this component's assets. To name them your way, subclass the component in your project, return
        your ``MongoDltTranslator`` subclass here, and use your component's type in defs.yaml."""
        return MongoDltTranslator()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        slug = component_slug(context.path.relative_to(context.defs_module_path).parts)
        return build_definitions(
            self.project_config(context),
            resource_key=component_resource_key(slug),
            all_collections_job=component_job_name(slug),
            base=Path(context.project_root),
            executor=False,
            translator=self.get_translator(),
        )
