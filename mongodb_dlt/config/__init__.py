"""The YAML: pydantic models with every option's default and reason on its field (models), the YAML document
with source positions (document), inheritance ``defaults`` -> database -> collection and ``load_config``
(resolve), and ``${VAR}`` substitution (env)."""

from mongodb_dlt.config.env import resolve_connection_url, resolve_env
from mongodb_dlt.config.models import (
    CONFIG_PATH_ENV,
    CollectionConfig,
    CollectionOptions,
    DatabaseConfig,
    DestinationConfig,
    FreshnessConfig,
    IncrementalConfig,
    PartitionsConfig,
    ProjectConfig,
    RetryConfig,
    collection_name_problem,
    config_path,
    database_name_problem,
)
from mongodb_dlt.config.resolve import load_config
from mongodb_dlt.errors import ConfigError, mask_secrets, mask_url

__all__ = [
    "CONFIG_PATH_ENV",
    "CollectionConfig",
    "CollectionOptions",
    "ConfigError",
    "DatabaseConfig",
    "DestinationConfig",
    "FreshnessConfig",
    "IncrementalConfig",
    "PartitionsConfig",
    "ProjectConfig",
    "RetryConfig",
    "collection_name_problem",
    "config_path",
    "database_name_problem",
    "load_config",
    "mask_secrets",
    "mask_url",
    "resolve_connection_url",
    "resolve_env",
]
