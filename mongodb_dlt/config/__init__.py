"""The YAML: pydantic models with every option's default and meaning on its field, the YAML document with source
positions, inheritance (``defaults`` -> database -> collection) and ``${VAR}`` substitution; ``load_config``."""

from mongodb_dlt.config.models import (
    CONFIG_PATH_ENV,
    DEFAULTS,
    CollectionConfig,
    CollectionOptions,
    DatabaseConfig,
    DestinationConfig,
    FreshnessConfig,
    IncrementalConfig,
    ProjectConfig,
    RetryConfig,
    collection_name_problem,
    config_path,
    database_name_problem,
    load_config,
    resolve_connection_url,
    resolve_env,
)
from mongodb_dlt.errors import ConfigError, mask_secrets, mask_url

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULTS",
    "CollectionConfig",
    "CollectionOptions",
    "ConfigError",
    "DatabaseConfig",
    "DestinationConfig",
    "FreshnessConfig",
    "IncrementalConfig",
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
