"""Typed configuration: YAML profiles decoded into Structs, cross-references checked before any I/O.

load_config(path) -> OrchestraConfig      (schemas.config.load)
ConfigError(ValueError)                   one error naming the file and the path inside it
"""

from schemas.config.load import ConfigError, default_config_path, load_config
from schemas.config.root import OrchestraConfig

__all__ = ["ConfigError", "OrchestraConfig", "default_config_path", "load_config"]
